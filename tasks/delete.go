package tasks

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// deletePlan decides between a recovery window and a forced delete.
//
// The op overrides the connector: an op that sets force_delete_without_recovery
// (true or false) or a recovery window decides alone; otherwise the
// connector's settings apply. A window of 0 means the default, 30 days.
// Force together with a window (in the op, or in the connector) is
// INVALID_ARGUMENT, reported before AWS is called.
func deletePlan(op *delegatev1.DeleteSecretOp, c *delegatev1.ConnectorSettings) (force bool, days int32, err *Error) {
	switch {
	case op.ForceDeleteWithoutRecovery != nil:
		force, days = op.GetForceDeleteWithoutRecovery(), op.GetRecoveryWindowDays()
		if force && days != 0 {
			return false, 0, invalid("recovery_window_days", "must not be set together with force_delete_without_recovery")
		}
		if !force && days == 0 {
			days = c.GetRecoveryWindowDays()
		}
	case op.GetRecoveryWindowDays() != 0:
		days = op.GetRecoveryWindowDays()
	default:
		force, days = c.GetForceDeleteWithoutRecovery(), c.GetRecoveryWindowDays()
		if force && days != 0 {
			return false, 0, invalid("connector.recovery_window_days", "must not be set together with connector.force_delete_without_recovery")
		}
	}
	if force {
		return true, 0, nil
	}
	if days == 0 {
		days = DefaultRecovery
	}
	if days < MinRecoveryDays || days > MaxRecoveryDays {
		return false, 0, invalid("recovery_window_days", fmt.Sprintf("must be %d-%d days", MinRecoveryDays, MaxRecoveryDays))
	}
	return false, days, nil
}

// delete schedules the secret's deletion, or deletes it at once when
// forced. On an attempt after the first, a secret already gone (or already
// scheduled, for a non-forced delete) is success: the earlier attempt did it.
// A secret without the managed-by tag is refused unless the op adopts or
// forces (see guard); one that does not exist goes on to DeleteSecret, so
// AWS's answer for a missing secret stands.
func (x *execution) delete(ctx context.Context, op *delegatev1.DeleteSecretOp) (*delegatev1.SecretResult, *Error) {
	full, verr := fullName(x.prefix, op.GetName())
	if verr != nil {
		return nil, verr
	}
	force, days, verr := deletePlan(op, x.conn)
	if verr != nil {
		return nil, verr
	}
	sm, verr := x.api(ctx)
	if verr != nil {
		return nil, verr
	}
	adopted, missing, verr := x.guard(ctx, op.GetName(), full, op.GetUnmanaged())
	if verr != nil && !missing {
		return nil, verr
	}
	in := &secretsmanager.DeleteSecretInput{SecretId: aws.String(full)}
	if force {
		in.ForceDeleteWithoutRecovery = aws.Bool(true)
	} else {
		in.RecoveryWindowInDays = aws.Int64(int64(days))
	}
	out, err := sm.DeleteSecret(ctx, in)
	if err != nil {
		e := x.fail(ctx, op.GetName(), err)
		var nf *types.ResourceNotFoundException
		if x.attempt > 1 && (errors.As(err, &nf) || (!force && e.Code == delegatev1.Code_SCHEDULED_FOR_DELETION)) {
			x.log.Debug().Int32("attempt", x.attempt).Msg("delete on a retry found the secret already deleted")
			return &delegatev1.SecretResult{Name: x.prefix.Strip(full), Action: actionDelete}, nil
		}
		return nil, e
	}
	res := &delegatev1.SecretResult{
		Name:    x.prefix.Strip(aws.ToString(out.Name)),
		Arn:     aws.ToString(out.ARN),
		Action:  actionDelete,
		Adopted: adopted,
	}
	if !force { // a forced delete has no recovery date: the secret is gone
		res.DeletionDate = ts(out.DeletionDate)
	}
	return res, nil
}

// restore cancels a scheduled deletion. Like the other changes it needs
// the managed-by tag, or adopt (which tags after restoring: AWS does not
// tag a secret scheduled for deletion) or force.
func (x *execution) restore(ctx context.Context, op *delegatev1.RestoreSecretOp) (*delegatev1.SecretResult, *Error) {
	full, verr := fullName(x.prefix, op.GetName())
	if verr != nil {
		return nil, verr
	}
	sm, verr := x.api(ctx)
	if verr != nil {
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
	out, err := sm.RestoreSecret(ctx, &secretsmanager.RestoreSecretInput{SecretId: aws.String(full)})
	if err != nil {
		return nil, x.fail(ctx, op.GetName(), err)
	}
	if adopt {
		if verr := x.adopt(ctx, op.GetName(), full); verr != nil {
			return nil, verr
		}
	}
	return &delegatev1.SecretResult{
		Name:    x.prefix.Strip(aws.ToString(out.Name)),
		Arn:     aws.ToString(out.ARN),
		Action:  actionRestore,
		Adopted: adopt,
	}, nil
}
