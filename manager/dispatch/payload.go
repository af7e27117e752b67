package dispatch

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Payloads at rest: sealed under the master key and bound to the task id;
// what is kept of one once the task is final (without secret values).

// needsResolve reports whether p names a connector to resolve.
func (d *Dispatcher) needsResolve(p *delegatev1.TaskPayload) bool {
	return d.resolve != nil && p.GetConnector() != nil && p.GetSecret() != nil
}

// sealPayload marshals and, with a master key, encrypts a payload for the
// store, bound to the task id.
func (d *Dispatcher) sealPayload(id string, p *delegatev1.TaskPayload) ([]byte, error) {
	raw, err := proto.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("marshal payload: %w", err)
	}
	if d.sealer == nil {
		return raw, nil
	}
	return d.sealer.Seal(raw, []byte("task/"+id)), nil
}

// keptPayload is what the store keeps of task id's payload p once the
// task is final: p without its secret values (delegatev1.Redact), sealed.
// p itself is not changed. On error it returns nil, for no payload.
func (d *Dispatcher) keptPayload(id string, p *delegatev1.TaskPayload) ([]byte, error) {
	c := proto.Clone(p).(*delegatev1.TaskPayload)
	delegatev1.Redact(c)
	raw, err := d.sealPayload(id, c)
	if err != nil {
		return nil, err
	}
	return raw, nil
}

// scrubStored is the store.ScrubFunc of the migration of tasks an older
// manager finished with their whole payload: the payload without its
// secret values. A payload it cannot open (another master key, damage)
// is dropped: a final task needs none, and one that cannot be read
// cannot be scrubbed either.
func (d *Dispatcher) scrubStored(id string, raw []byte) ([]byte, error) {
	p, err := d.openPayload(id, raw)
	if err != nil {
		d.log.Warn().Err(err).Str("task_id", id).Msg("finished task has an unreadable payload; dropping it")
		return nil, nil
	}
	return d.keptPayload(id, p)
}

// openPayload reverses sealPayload.
func (d *Dispatcher) openPayload(id string, raw []byte) (*delegatev1.TaskPayload, error) {
	if d.sealer != nil {
		var err error
		if raw, err = d.sealer.Open(raw, []byte("task/"+id)); err != nil {
			return nil, err
		}
	}
	p := &delegatev1.TaskPayload{}
	return p, proto.Unmarshal(raw, p)
}
