// Package tasks runs secret tasks against AWS Secrets Manager: it validates
// a task before AWS is called, applies the connector's name prefix once,
// resolves JSON references in gets, makes writes idempotent with a
// ClientRequestToken derived from the task id, and translates every AWS
// failure into a typed outcome code with a message that never holds a
// secret value or credential.
package tasks

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/tasks/awsauth"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// SecretsManagerAPI is the part of *secretsmanager.Client the tasks use, in
// the SDK's exact signatures, so tests can substitute a fake.
type SecretsManagerAPI interface {
	CreateSecret(ctx context.Context, params *secretsmanager.CreateSecretInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.CreateSecretOutput, error)
	GetSecretValue(ctx context.Context, params *secretsmanager.GetSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
	PutSecretValue(ctx context.Context, params *secretsmanager.PutSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.PutSecretValueOutput, error)
	UpdateSecret(ctx context.Context, params *secretsmanager.UpdateSecretInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.UpdateSecretOutput, error)
	DeleteSecret(ctx context.Context, params *secretsmanager.DeleteSecretInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.DeleteSecretOutput, error)
	RestoreSecret(ctx context.Context, params *secretsmanager.RestoreSecretInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.RestoreSecretOutput, error)
	ListSecrets(ctx context.Context, params *secretsmanager.ListSecretsInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.ListSecretsOutput, error)
	DescribeSecret(ctx context.Context, params *secretsmanager.DescribeSecretInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.DescribeSecretOutput, error)
	ListSecretVersionIds(ctx context.Context, params *secretsmanager.ListSecretVersionIdsInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.ListSecretVersionIdsOutput, error)
	GetRandomPassword(ctx context.Context, params *secretsmanager.GetRandomPasswordInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.GetRandomPasswordOutput, error)
	TagResource(ctx context.Context, params *secretsmanager.TagResourceInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.TagResourceOutput, error)
	UntagResource(ctx context.Context, params *secretsmanager.UntagResourceInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.UntagResourceOutput, error)
}

var _ SecretsManagerAPI = (*secretsmanager.Client)(nil)

// ClientFactory returns the Secrets Manager client for a connector. Its
// errors are awsauth errors (*awsauth.FieldError wrapping
// awsauth.ErrInvalidSettings or awsauth.ErrCredentials).
type ClientFactory interface {
	SecretsManager(ctx context.Context, c *delegatev1.ConnectorSettings) (SecretsManagerAPI, error)
}

// ClientFactoryFunc adapts a function to ClientFactory.
type ClientFactoryFunc func(ctx context.Context, c *delegatev1.ConnectorSettings) (SecretsManagerAPI, error)

// SecretsManager calls f.
func (f ClientFactoryFunc) SecretsManager(ctx context.Context, c *delegatev1.ConnectorSettings) (SecretsManagerAPI, error) {
	return f(ctx, c)
}

// PoolFactory adapts an *awsauth.Pool to ClientFactory.
func PoolFactory(p *awsauth.Pool) ClientFactory {
	return ClientFactoryFunc(func(ctx context.Context, c *delegatev1.ConnectorSettings) (SecretsManagerAPI, error) {
		cl, err := p.SecretsManager(ctx, c)
		if err != nil {
			return nil, err
		}
		return cl, nil
	})
}

// RunnerOptions configures a Runner.
type RunnerOptions struct {
	// Logger receives debug lines about each task; none holds a secret
	// value, credential or token.
	Logger zerolog.Logger
	// Pool builds the connectors' clients (ignored when Clients is set);
	// its Policy also decides which references the runner reads to keep
	// their material out of messages.
	Pool *awsauth.Pool
	// Clients overrides Pool (tests). When both are nil a default Pool is
	// used.
	Clients ClientFactory
}

// Runner runs secret tasks. It is safe for concurrent use.
type Runner struct {
	log     zerolog.Logger
	clients ClientFactory
	// policy resolves the connector's references for sanitizing: the
	// Pool's, so a reference the host refuses is never read. nil (Clients
	// without a Pool) reads none.
	policy *awsauth.Policy
}

// NewRunner returns a Runner.
func NewRunner(opts RunnerOptions) *Runner {
	r := &Runner{log: opts.Logger.With().Str("component", "tasks").Logger(), clients: opts.Clients}
	if opts.Pool != nil {
		r.policy = opts.Pool.Policy()
	}
	if r.clients == nil {
		p := opts.Pool
		if p == nil {
			p = awsauth.NewPool(awsauth.PoolOptions{})
		}
		r.clients = PoolFactory(p)
	}
	return r
}

type attemptKey struct{}

// WithAttempt returns a context carrying the dispatch attempt of the task
// (delegatev1.Task.attempt, starting at 1). Run reads it: on an attempt after
// the first, a delete that finds the secret already gone (or already
// scheduled for deletion) succeeds, because the earlier attempt most likely
// did it before its lease was lost. Without it Run assumes attempt 1.
func WithAttempt(ctx context.Context, attempt int32) context.Context {
	return context.WithValue(ctx, attemptKey{}, attempt)
}

// AttemptFrom returns the attempt WithAttempt stored in ctx, or 1.
func AttemptFrom(ctx context.Context) int32 {
	if n, ok := ctx.Value(attemptKey{}).(int32); ok && n > 0 {
		return n
	}
	return 1
}

// Run runs one secret task and reports its outcome. It never panics and
// never returns nil: success is Code OK with a SecretResult; failure a typed
// Code, a message safe to show, and whether a later retry may succeed (a
// connection test that ran returns its checks with a failure too). taskID
// seeds the ClientRequestToken of writes; the dispatch attempt comes from
// ctx (see WithAttempt).
func (r *Runner) Run(ctx context.Context, taskID string, t *delegatev1.SecretTask) (out *delegatev1.Outcome) {
	start := time.Now()
	x := &execution{
		clients: r.clients,
		policy:  r.policy,
		taskID:  taskID,
		attempt: AttemptFrom(ctx),
	}
	x.log = r.log.With().Str("task_id", taskID).Str("op", opName(t)).Logger()
	defer func() {
		if p := recover(); p != nil {
			x.log.Error().Str("panic", sanitize(fmt.Sprint(p), "(withheld)", x.secrets...)).Msg("secret task panicked")
			out = &delegatev1.Outcome{Code: delegatev1.Code_INTERNAL, Message: "internal error: the task handler failed; the delegate's log has the detail"}
		}
	}()

	res, err := x.run(ctx, t)
	out = &delegatev1.Outcome{Code: delegatev1.Code_OK}
	if res != nil {
		out.Body = &delegatev1.Outcome_Secret{Secret: res}
	}
	if err != nil {
		out.Code, out.Message, out.Retryable = err.Code, err.Error(), err.Retryable
	}
	x.log.Debug().Str("code", out.Code.String()).Bool("retryable", out.Retryable).
		Dur("elapsed", time.Since(start)).Msg("secret task finished")
	return out
}

// execution is the state of one Run.
type execution struct {
	clients ClientFactory
	policy  *awsauth.Policy
	taskID  string
	attempt int32
	log     zerolog.Logger

	conn   *delegatev1.ConnectorSettings
	prefix Prefix
	sm     SecretsManagerAPI
	// secrets are the task's values and credentials, kept out of messages.
	secrets []string
}

func opName(t *delegatev1.SecretTask) string {
	switch t.GetOp().(type) {
	case *delegatev1.SecretTask_Create:
		return "create"
	case *delegatev1.SecretTask_Upsert:
		return "upsert"
	case *delegatev1.SecretTask_Get:
		return "get"
	case *delegatev1.SecretTask_Update:
		return "update"
	case *delegatev1.SecretTask_Delete:
		return "delete"
	case *delegatev1.SecretTask_Restore:
		return "restore"
	case *delegatev1.SecretTask_List:
		return "list"
	case *delegatev1.SecretTask_Describe:
		return "describe"
	case *delegatev1.SecretTask_TestConnection:
		return "test_connection"
	case *delegatev1.SecretTask_Tag:
		return "tag"
	case *delegatev1.SecretTask_Versions:
		return "versions"
	}
	return "unknown"
}

func (x *execution) run(ctx context.Context, t *delegatev1.SecretTask) (*delegatev1.SecretResult, *Error) {
	if t == nil {
		return nil, invalid("task", "is missing")
	}
	x.conn = t.GetConnector()
	if x.conn == nil {
		return nil, invalid("connector", "is missing")
	}
	x.prefix = NewPrefix(x.conn.GetSecretNamePrefix())
	x.collectSecrets(t)
	x.log = x.log.With().Str("connector", x.conn.GetId()).Logger()
	x.log.Debug().Int32("attempt", x.attempt).Msg("secret task started")

	op := opName(t)
	var res *delegatev1.SecretResult
	// Validate's checks first: a task the manager would have refused
	// fails here the same way, before any credential is resolved.
	err := x.check(t)
	if err == nil {
		switch o := t.GetOp().(type) {
		case *delegatev1.SecretTask_Create:
			res, err = x.create(ctx, o.Create)
		case *delegatev1.SecretTask_Upsert:
			res, err = x.upsert(ctx, o.Upsert)
		case *delegatev1.SecretTask_Get:
			res, err = x.get(ctx, o.Get)
		case *delegatev1.SecretTask_Update:
			res, err = x.update(ctx, o.Update)
		case *delegatev1.SecretTask_Delete:
			res, err = x.delete(ctx, o.Delete)
		case *delegatev1.SecretTask_Restore:
			res, err = x.restore(ctx, o.Restore)
		case *delegatev1.SecretTask_List:
			res, err = x.list(ctx, o.List)
		case *delegatev1.SecretTask_Describe:
			res, err = x.describe(ctx, o.Describe)
		case *delegatev1.SecretTask_TestConnection:
			res, err = x.testConnection(ctx)
		case *delegatev1.SecretTask_Tag:
			res, err = x.tag(ctx, o.Tag)
		case *delegatev1.SecretTask_Versions:
			res, err = x.versions(ctx, o.Versions)
		}
	}
	if err != nil && err.Op == "" {
		err.Op = op
	}
	return res, err
}

// collectSecrets gathers what sanitize must keep out of messages and logs:
// the task's value and every credential the connector carries or names.
// Values the task learns later (a generated password, a value read) are
// added where they are learnt.
func (x *execution) collectSecrets(t *delegatev1.SecretTask) {
	add := func(v *delegatev1.SecretValue) {
		if s := v.GetStringValue(); s != "" {
			x.secrets = append(x.secrets, s)
		}
		if b := v.GetBinaryValue(); len(b) > 0 {
			x.secrets = append(x.secrets, string(b))
		}
	}
	add(t.GetCreate().GetValue())
	add(t.GetUpsert().GetValue())
	add(t.GetUpdate().GetValue())
	for _, ref := range []struct {
		field string
		ref   *delegatev1.SecretRef
	}{{"access_key_id", x.conn.GetAccessKeyId()}, {"secret_access_key", x.conn.GetSecretAccessKey()}} {
		if v, err := x.policy.ResolveRef(ref.field, ref.ref); err == nil {
			x.secrets = append(x.secrets, v)
		}
	}
	if tok := x.conn.GetWebIdentityToken(); tok != "" {
		x.secrets = append(x.secrets, tok)
	}
}

// api returns the connector's client, built on first use so that a task
// that fails validation never resolves credentials.
func (x *execution) api(ctx context.Context) (SecretsManagerAPI, *Error) {
	if x.sm != nil {
		return x.sm, nil
	}
	sm, err := x.clients.SecretsManager(ctx, x.conn)
	if err != nil {
		return nil, x.fail(ctx, "", err)
	}
	x.sm = sm
	return sm, nil
}

// fail translates an AWS (or client pool) error for the secret name and
// logs the sanitized detail: at warn when the outcome says smdelegate
// could not work with the endpoint's answer (UNSUPPORTED, or INTERNAL: an
// AWS code the table does not know, or no AWS answer at all), which an
// operator should see without debug logging; at debug otherwise, since
// the outcome itself tells the caller what happened.
func (x *execution) fail(ctx context.Context, name string, err error) *Error {
	c := call{name: name, secrets: x.secrets}
	e, detail := translate(ctx, c, err)
	ev, msg := x.log.Debug(), "aws call failed"
	switch e.Code {
	case delegatev1.Code_UNSUPPORTED:
		ev, msg = x.log.Warn(), "the endpoint does not support the operation"
	case delegatev1.Code_INTERNAL:
		ev, msg = x.log.Warn(), "aws call failed with an error smdelegate does not classify"
	}
	ev.Str("code", e.Code.String()).Str("action", awsAction(err)).Str("aws_code", awsErrorCode(c, err)).
		Str("detail", detail).Msg(msg)
	return e
}

// token is the ClientRequestToken of this task's writes.
func (x *execution) token() (string, *Error) {
	if x.taskID == "" {
		return "", invalid("task_id", "is required for a write: it seeds the idempotency token")
	}
	return RequestToken(x.taskID), nil
}
