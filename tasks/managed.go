package tasks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// The managed-by tag: every secret a task creates carries
// KEY=ManagedByValue, where KEY is the connector's managed_by_tag_key (or
// DefaultManagedByTagKey). A change to an existing secret (update, the
// update half of an upsert, delete, restore, tag) first reads the secret's
// tags with DescribeSecret and refuses, with ErrNotManaged, a secret
// without that tag unless the task says UNMANAGED_ADOPT (tag it, then
// change it) or UNMANAGED_FORCE (change it untagged). So a delegate never
// changes a secret it was not asked to manage, even one under its prefix.
//
// The check and the change are separate calls: a tag removed between them
// is not noticed. It guards against mistakes (a name that collides with a
// secret someone else owns), not against a concurrent adversary; IAM
// conditions on secretsmanager:ResourceTag/KEY do that.
const (
	DefaultManagedByTagKey = "managed-by"
	ManagedByValue         = "smdelegate"
)

// Names of the AWS APIs that change tags, as SecretResult.action reports.
const (
	actionTag   = "TagResource"
	actionUntag = "UntagResource"
)

// managedKey is the connector's managed-by tag key.
func (x *execution) managedKey() string {
	if k := strings.TrimSpace(x.conn.GetManagedByTagKey()); k != "" {
		return k
	}
	return DefaultManagedByTagKey
}

// managedTag is "KEY=smdelegate", as messages name it.
func (x *execution) managedTag() string { return x.managedKey() + "=" + ManagedByValue }

// existing is what DescribeSecret told of a secret a change is about to
// touch.
type existing struct {
	arn       string
	tags      map[string]string
	scheduled bool
}

// inspect describes the secret full. A secret that does not exist gives
// notFound with the NOT_FOUND error, so that delete can go on as AWS would
// (a retry's or a forced delete of a missing secret succeeds).
func (x *execution) inspect(ctx context.Context, name, full string) (ex existing, notFound bool, err *Error) {
	d, aerr := x.sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(full)})
	if aerr != nil {
		var nf *types.ResourceNotFoundException
		return ex, errors.As(aerr, &nf), x.fail(ctx, name, aerr)
	}
	return existing{arn: aws.ToString(d.ARN), tags: tagMap(d.Tags), scheduled: d.DeletedDate != nil}, false, nil
}

// allow decides whether a change may touch ex under policy. adopt says the
// caller must tag the secret (x.adopt) to go on: before the change, or for
// a restore right after it (AWS refuses to tag a secret scheduled for
// deletion).
func (x *execution) allow(name string, ex existing, policy delegatev1.Unmanaged) (adopt bool, err *Error) {
	key := x.managedKey()
	if ex.tags[key] == ManagedByValue {
		return false, nil
	}
	switch policy {
	case delegatev1.Unmanaged_UNMANAGED_ADOPT:
		return true, nil
	case delegatev1.Unmanaged_UNMANAGED_FORCE:
		x.log.Info().Str("tag", x.managedTag()).Msg("changing a secret without the managed-by tag (force)")
		return false, nil
	case delegatev1.Unmanaged_UNMANAGED_REFUSE:
	default:
		return false, checkUnmanaged(policy)
	}
	has := ""
	if v, ok := ex.tags[key]; ok {
		has = fmt.Sprintf(" (its %s tag is %q)", key, sanitize(v, "another value", x.secrets...))
	}
	return false, &Error{
		Code:   delegatev1.Code_INVALID_ARGUMENT,
		Reason: ErrNotManaged,
		Msg: fmt.Sprintf("secret %q is not managed by smdelegate: it lacks the tag %s%s; nothing was changed. "+
			"Add --adopt to tag it and go on, or --force to go on without the tag", name, x.managedTag(), has),
	}
}

// checkUnmanaged refuses a policy that is not one of the three.
func checkUnmanaged(p delegatev1.Unmanaged) *Error {
	switch p {
	case delegatev1.Unmanaged_UNMANAGED_REFUSE, delegatev1.Unmanaged_UNMANAGED_ADOPT, delegatev1.Unmanaged_UNMANAGED_FORCE:
		return nil
	}
	return invalid("unmanaged", "must be refuse, adopt or force")
}

// adopt tags the secret full as managed.
func (x *execution) adopt(ctx context.Context, name, full string) *Error {
	_, err := x.sm.TagResource(ctx, &secretsmanager.TagResourceInput{
		SecretId: aws.String(full),
		Tags:     []types.Tag{{Key: aws.String(x.managedKey()), Value: aws.String(ManagedByValue)}},
	})
	if err != nil {
		return x.fail(ctx, name, err)
	}
	x.log.Info().Str("tag", x.managedTag()).Msg("adopted a secret: tagged it as managed")
	return nil
}

// tagInput validates a tag change and returns the secret's full name.
func (x *execution) tagInput(op *delegatev1.TagSecretOp) (string, *Error) {
	full, verr := fullName(x.prefix, op.GetName())
	if verr != nil {
		return "", verr
	}
	add, remove := op.GetAdd(), op.GetRemove()
	if len(add) == 0 && len(remove) == 0 {
		return "", invalid("add", "a tag change needs tags to add or to remove")
	}
	if verr := checkTags(add); verr != nil {
		return "", verr
	}
	for i, k := range remove {
		field := fmt.Sprintf("remove[%d]", i)
		switch n := utf8.RuneCountInString(k); {
		case n < 1 || n > MaxTagKeyLen:
			return "", invalid(field, fmt.Sprintf("key must be 1-%d characters", MaxTagKeyLen))
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			return "", invalid(field, "key must not start with aws:")
		}
		if _, ok := add[k]; ok {
			return "", invalid(field, fmt.Sprintf("tag %q is both added and removed", k))
		}
	}
	if verr := checkUnmanaged(op.GetUnmanaged()); verr != nil {
		return "", verr
	}
	key := x.managedKey()
	v, setsKey := add[key]
	if ((setsKey && v != ManagedByValue) || slices.Contains(remove, key)) && op.GetUnmanaged() != delegatev1.Unmanaged_UNMANAGED_FORCE {
		return "", invalid("tags", fmt.Sprintf("changing or removing the tag %s releases the secret from smdelegate; add --force to do it", x.managedTag()))
	}
	return full, nil
}

// guard is inspect, allow and adopt for a change that may tag before it
// runs (update, upsert, delete). missing reports a secret that does not
// exist (with err NOT_FOUND).
func (x *execution) guard(ctx context.Context, name, full string, policy delegatev1.Unmanaged) (adopted, missing bool, err *Error) {
	ex, notFound, err := x.inspect(ctx, name, full)
	if err != nil {
		return false, notFound, err
	}
	adopt, err := x.allow(name, ex, policy)
	if err != nil || !adopt {
		return false, false, err
	}
	if err := x.adopt(ctx, name, full); err != nil {
		return false, false, err
	}
	return true, false, nil
}

// tag adds and removes tags. Setting the managed-by key to another value
// or removing it releases the secret from smdelegate, so it needs force.
func (x *execution) tag(ctx context.Context, op *delegatev1.TagSecretOp) (*delegatev1.SecretResult, *Error) {
	full, verr := x.tagInput(op)
	if verr != nil {
		return nil, verr
	}
	add, remove := op.GetAdd(), op.GetRemove()
	key := x.managedKey()
	if _, verr := x.api(ctx); verr != nil {
		return nil, verr
	}
	ex, _, verr := x.inspect(ctx, op.GetName(), full)
	if verr != nil {
		return nil, verr
	}
	adopt, verr := x.allow(op.GetName(), ex, op.GetUnmanaged())
	if verr != nil {
		return nil, verr
	}
	res := &delegatev1.SecretResult{Name: x.prefix.Strip(full), Arn: ex.arn, Adopted: adopt}
	tags := make(map[string]string, len(add)+1)
	for k, v := range add {
		tags[k] = v
	}
	if adopt {
		tags[key] = ManagedByValue
	}
	var actions []string
	if len(tags) > 0 {
		if _, err := x.sm.TagResource(ctx, &secretsmanager.TagResourceInput{SecretId: aws.String(full), Tags: sortedTags(tags)}); err != nil {
			return nil, x.fail(ctx, op.GetName(), err)
		}
		actions = append(actions, actionTag)
	}
	if len(remove) > 0 {
		if _, err := x.sm.UntagResource(ctx, &secretsmanager.UntagResourceInput{SecretId: aws.String(full), TagKeys: remove}); err != nil {
			return nil, x.fail(ctx, op.GetName(), err)
		}
		actions = append(actions, actionUntag)
	}
	res.Action = strings.Join(actions, ",")
	return res, nil
}
