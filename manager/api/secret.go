package api

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager/dispatch"
	"github.com/smdelegate/smdelegate/manager/resolve"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Secret runs a secret operation through a connector: reads are sync and
// never stored; mutations are persisted before the call returns and, unless
// async, waited for.
func (s *Service) Secret(ctx context.Context, req *delegatev1.SecretRequest) (*delegatev1.TaskInfo, error) {
	st, mutation := SecretTaskOf(req)
	if st == nil {
		return nil, Invalid(config.Errf("op", "one operation is required (create, upsert, get, update, delete, restore, list, describe, tag, versions)"))
	}
	if err := validRef("connector", req.GetConnector(), false); err != nil {
		return nil, Invalid(err)
	}
	if req.GetCreate().GetReturnValue() && req.GetAsync() {
		// The value exists only in memory, for the caller that waits.
		return nil, Invalid(config.Errf("create.return_value", "needs a request that waits for the result (async false): the generated value is never stored"))
	}
	if err := validateRequestID(req.GetRequestId()); err != nil {
		return nil, Invalid(err)
	}
	var r store.Request // reads are never stored: nothing to deduplicate
	if mutation {
		var err error
		if r, err = s.storeRequest(ctx, "Secret", req); err != nil {
			return nil, s.toStatus(err)
		}
	}
	return s.runSecret(ctx, req.GetConnector(), st, resolve.SecretKind(st), mutation, req.GetAsync(), r)
}

// SecretTaskOf returns the secret task req asks for, and whether it is a
// change (stored, idempotent under its request id) rather than a read;
// nil for a request without an operation. The CLI checks it with
// tasks.Validate before sending, as the manager does before storing.
func SecretTaskOf(req *delegatev1.SecretRequest) (st *delegatev1.SecretTask, mutation bool) {
	st = &delegatev1.SecretTask{}
	mutation = true
	switch op := req.GetOp().(type) {
	case *delegatev1.SecretRequest_Create:
		st.Op = &delegatev1.SecretTask_Create{Create: op.Create}
	case *delegatev1.SecretRequest_Upsert:
		st.Op = &delegatev1.SecretTask_Upsert{Upsert: op.Upsert}
	case *delegatev1.SecretRequest_Update:
		st.Op = &delegatev1.SecretTask_Update{Update: op.Update}
	case *delegatev1.SecretRequest_Delete:
		st.Op = &delegatev1.SecretTask_Delete{Delete: op.Delete}
	case *delegatev1.SecretRequest_Restore:
		st.Op = &delegatev1.SecretTask_Restore{Restore: op.Restore}
	case *delegatev1.SecretRequest_Get:
		st.Op, mutation = &delegatev1.SecretTask_Get{Get: op.Get}, false
	case *delegatev1.SecretRequest_List:
		st.Op, mutation = &delegatev1.SecretTask_List{List: op.List}, false
	case *delegatev1.SecretRequest_Describe:
		st.Op, mutation = &delegatev1.SecretTask_Describe{Describe: op.Describe}, false
	case *delegatev1.SecretRequest_Tag:
		st.Op = &delegatev1.SecretTask_Tag{Tag: op.Tag}
	case *delegatev1.SecretRequest_Versions:
		st.Op, mutation = &delegatev1.SecretTask_Versions{Versions: op.Versions}, false
	default:
		return nil, false
	}
	return st, mutation
}

// TestConnector runs a connection test (sync) on a delegate the connector selects.
func (s *Service) TestConnector(ctx context.Context, req *delegatev1.TestConnectorRequest) (*delegatev1.TaskInfo, error) {
	if err := validRef("ref", req.GetRef(), false); err != nil {
		return nil, Invalid(err)
	}
	st := &delegatev1.SecretTask{Op: &delegatev1.SecretTask_TestConnection{TestConnection: &delegatev1.TestConnectionOp{}}}
	return s.runSecret(ctx, req.GetRef(), st, resolve.SecretKind(st), false, false, store.Request{})
}

// runSecret submits a secret task: a mutation is stored (idempotent under
// r, when it has an id) and, unless async, waited for; a read is sync.
func (s *Service) runSecret(ctx context.Context, ref *delegatev1.ConnectorRef, st *delegatev1.SecretTask,
	kind string, mutation, async bool, r store.Request) (*delegatev1.TaskInfo, error) {
	c, err := s.lookupConnector(ctx, ref)
	if err != nil {
		return nil, err
	}
	// The delegate's own checks, before anything is stored.
	if err := validSecretTask(st, c); err != nil {
		return nil, Invalid(err)
	}
	selectors := c.GetDelegateSelectors()
	if c.GetCredentialType() == delegatev1.CredentialType_OIDC && c.GetOidcConnectivity() == delegatev1.OIDCConnectivity_PLATFORM {
		selectors = []string{dispatch.PlatformTag}
	}
	req := dispatch.SubmitRequest{
		Kind:      kind,
		Selectors: selectors,
		Payload: &delegatev1.TaskPayload{
			Op:        &delegatev1.TaskPayload_Secret{Secret: st},
			Connector: &delegatev1.ConnectorRef{Scope: c.GetScope(), Identifier: c.GetIdentifier()},
		},
		Async:   mutation,
		Request: r,
	}
	if mutation {
		// Changes of one secret run one at a time, in this order.
		req.OrderKey = dispatch.OrderKey(c, st)
	}
	t, err := s.d.Submit(ctx, req)
	if err != nil {
		return nil, s.toStatus(err)
	}
	if mutation && async {
		return t.Info(), nil
	}
	// A stored mutation outlives the manager (the next start, or another
	// replica, runs it): its caller is released when the manager begins
	// to close, not held until shutdown_timeout. A read is failed by the
	// close itself.
	var stopping <-chan struct{}
	if mutation {
		stopping = s.d.Stopping()
	}
	select {
	case <-t.Done():
	case <-stopping:
		select {
		case <-t.Done(): // finished meanwhile: answer it
		default:
			return nil, s.toStatus(fmt.Errorf("%w; task %s is stored and runs once a manager is back (smd task watch %s)",
				dispatch.ErrShuttingDown, t.ID(), t.ID()))
		}
	case <-ctx.Done():
		if !mutation {
			t.Cancel("the caller went away")
		}
		return nil, s.toStatus(ctx.Err())
	}
	info := t.Info()
	switch {
	case mutation && !st.GetCreate().GetReturnValue():
		info.Outcome = dispatch.WithoutSecretValue(info.Outcome)
	case st.GetCreate().GetReturnValue():
		info.Outcome = valueNotShown(info.Outcome)
	}
	return info, nil
}

// valueNotShown is the outcome of a create with return_value as its
// caller sees it: the delegate's, or, when it succeeded without the
// generated value, one saying why. The value exists only in memory, for
// the callers holding the task there, and is never stored: a call that
// repeats the request after the task ended, or that waits on another
// replica than the one the value was sent to (or when sending it
// failed), gets the stored outcome.
func valueNotShown(o *delegatev1.Outcome) *delegatev1.Outcome {
	if o.GetCode() != delegatev1.Code_OK || o.GetSecret() == nil || o.GetSecret().GetValue() != nil {
		return o
	}
	c := proto.Clone(o).(*delegatev1.Outcome)
	c.Message = GeneratedNotShown
	return c
}

// GeneratedNotShown is the message of a create with return_value that
// succeeded but whose generated value cannot be shown to this call.
const GeneratedNotShown = "the secret was created at AWS with a generated value, but the value cannot be shown: " +
	"managers never store it, and it did not reach this call (smd secret get prints it)"
