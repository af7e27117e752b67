package tasks

import (
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Validate checks t as Run does before it calls AWS, with the same rules
// and the same messages: the manager refuses with it, before it stores a
// task, what a delegate would refuse after. Of t's connector it reads only
// what the rules depend on (secret_name_prefix, kms_key_id,
// managed_by_tag_key, recovery_window_days, force_delete_without_recovery);
// a nil connector is none of them. A failure is an *Error with Code
// INVALID_ARGUMENT, Op (the operation, "create") and Field set.
func Validate(t *delegatev1.SecretTask) *Error {
	x := &execution{conn: t.GetConnector(), prefix: NewPrefix(t.GetConnector().GetSecretNamePrefix())}
	if x.conn == nil {
		x.conn = &delegatev1.ConnectorSettings{}
	}
	// The token is derived from the task id only; what a check needs is
	// that there is one.
	x.taskID = "validate"
	err := x.check(t)
	if err != nil && err.Op == "" {
		err.Op = opName(t)
	}
	return err
}

// check runs the checks of t's operation that need no AWS call: the input
// builders its run uses, whose results it drops. run calls it first, so a
// delegate and Validate refuse exactly the same tasks.
func (x *execution) check(t *delegatev1.SecretTask) *Error {
	switch o := t.GetOp().(type) {
	case *delegatev1.SecretTask_Create:
		_, _, err := x.createOpInput(o.Create)
		return err
	case *delegatev1.SecretTask_Upsert:
		op := o.Upsert
		if _, err := x.createInput(op.GetName(), op.GetValue(), false, op.GetDescription(), op.GetTags(), op.GetKmsKeyId()); err != nil {
			return err
		}
		return checkUnmanaged(op.GetUnmanaged())
	case *delegatev1.SecretTask_Get:
		_, err := x.getInput(o.Get)
		return err
	case *delegatev1.SecretTask_Update:
		_, _, _, _, err := x.updateInput(o.Update)
		return err
	case *delegatev1.SecretTask_Delete:
		if _, err := fullName(x.prefix, o.Delete.GetName()); err != nil {
			return err
		}
		if _, _, err := deletePlan(o.Delete, x.conn); err != nil {
			return err
		}
		return checkUnmanaged(o.Delete.GetUnmanaged())
	case *delegatev1.SecretTask_Restore:
		if _, err := fullName(x.prefix, o.Restore.GetName()); err != nil {
			return err
		}
		return checkUnmanaged(o.Restore.GetUnmanaged())
	case *delegatev1.SecretTask_List:
		_, _, err := x.listInput(o.List)
		return err
	case *delegatev1.SecretTask_Describe:
		_, err := fullName(x.prefix, o.Describe.GetName())
		return err
	case *delegatev1.SecretTask_TestConnection:
		return nil
	case *delegatev1.SecretTask_Tag:
		_, err := x.tagInput(o.Tag)
		return err
	case *delegatev1.SecretTask_Versions:
		_, err := x.versionsInput(o.Versions)
		return err
	}
	return invalid("op", "is missing or unknown")
}
