package dispatch

import (
	"errors"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// genOutcome is a create's outcome carrying generated value v.
func genOutcome(v string) *delegatev1.Outcome {
	return &delegatev1.Outcome{Code: delegatev1.Code_OK, Body: &delegatev1.Outcome_Secret{Secret: &delegatev1.SecretResult{
		Name: "app/db", VersionId: "v1", Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: v}}}}}
}

// A delivered value is kept only beside a task a caller here waits for
// that asked for it, and reaches the caller only when the stored final
// state is OK under the lease it came with and is the same outcome but
// the value: a delivery with another lease (a forgery, or a stale run),
// for a task that failed, or with another outcome is dropped.
func TestIssue11GeneratedValueCheckedAgainstTheStore(t *testing.T) {
	d := New(clusterCfg(), nil, zerolog.Nop(), NewMetrics())
	d.SetCluster(ClusterConfig{Replica: "a"})
	create := &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Secret{Secret: &delegatev1.SecretTask{
		Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "db", ReturnValue: true,
			Generate: &delegatev1.GeneratePassword{}}}}}}
	plain := proto.Clone(create).(*delegatev1.TaskPayload)
	plain.GetSecret().GetCreate().ReturnValue = false
	awaited := func(id string, p *delegatev1.TaskPayload) *task {
		t := &task{id: id, async: true, payload: p, state: store.StateLeased, changed: make(chan struct{}), done: make(chan struct{})}
		d.cl.awaited[id] = &awaitedTask{t: t}
		return t
	}

	// Refused outright: not a generated value.
	for name, o := range map[string]*delegatev1.Outcome{
		"no value":   WithoutSecretValue(genOutcome("x")),
		"failed":     {Code: delegatev1.Code_INTERNAL, Body: genOutcome("x").GetBody()},
		"no body":    {Code: delegatev1.Code_OK},
		"nil":        nil,
		"other kind": {Code: delegatev1.Code_OK, Body: &delegatev1.Outcome_Ping{Ping: &delegatev1.PingResult{}}},
	} {
		if err := d.AcceptGenerated("t1", "l1", o); !errors.Is(err, ErrNotGenerated) {
			t.Errorf("AcceptGenerated(%s) = %v, want ErrNotGenerated", name, err)
		}
	}
	if err := d.AcceptGenerated("", "l1", genOutcome("x")); !errors.Is(err, ErrNotGenerated) {
		t.Errorf("AcceptGenerated without a task id = %v, want ErrNotGenerated", err)
	}

	// Dropped: nobody here waits for it, or the caller did not ask.
	noShow := awaited("plain", plain)
	for _, id := range []string{"unknown", "plain"} {
		if err := d.AcceptGenerated(id, "l1", genOutcome("x")); err != nil {
			t.Errorf("AcceptGenerated(%s) = %v, want nil (dropped)", id, err)
		}
	}
	if noShow.gen != nil {
		t.Error("a value was kept for a create that did not ask for it")
	}

	stored := func(state store.State, code, lease string, o *delegatev1.Outcome) *store.Task {
		raw, _ := proto.Marshal(WithoutSecretValue(o))
		return &store.Task{State: state, Code: code, LeaseID: lease, Outcome: raw}
	}
	real := genOutcome("the-real-value")
	other := genOutcome("the-real-value")
	other.GetSecret().VersionId = "v2"
	for _, c := range []struct {
		name  string
		lease string // of the delivery
		st    *store.Task
		want  bool
	}{
		{"same lease, OK, same outcome", "l1", stored(store.StateSucceeded, "OK", "l1", real), true},
		{"another lease", "l0", stored(store.StateSucceeded, "OK", "l1", real), false},
		{"failed", "l1", stored(store.StateFailed, "INTERNAL", "l1", &delegatev1.Outcome{Code: delegatev1.Code_INTERNAL}), false},
		{"another outcome", "l1", stored(store.StateSucceeded, "OK", "l1", other), false},
	} {
		tk := awaited("gen-"+c.lease, create)
		if err := d.AcceptGenerated(tk.id, c.lease, real); err != nil {
			t.Fatalf("%s: AcceptGenerated = %v", c.name, err)
		}
		if tk.gen == nil {
			t.Fatalf("%s: the value was not kept for the waiting caller", c.name)
		}
		var storedOutcome delegatev1.Outcome
		if err := proto.Unmarshal(c.st.Outcome, &storedOutcome); err != nil {
			t.Fatal(err)
		}
		d.mu.Lock()
		got := d.generatedLocked(tk, c.st, &storedOutcome)
		d.mu.Unlock()
		if shown := got.GetSecret().GetValue() != nil; shown != c.want {
			t.Errorf("%s: caller shown the value = %v, want %v", c.name, shown, c.want)
		}
		if tk.gen != nil {
			t.Errorf("%s: the delivered value outlives the task's end", c.name)
		}
		delete(d.cl.awaited, tk.id)
	}
}
