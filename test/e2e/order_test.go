package e2e

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestIssue10PerSecretOrder (issue 10, Done 4): 100 async updates of one
// secret, submitted in order without waiting, while the agent running them
// is SIGKILLed twice (and started again). The manager runs them one at a
// time: the value left AWSCURRENT is the 100th, and the secret's versions
// were created in submission order, one per update (a re-run after a kill
// reuses its task's ClientRequestToken). Before per-secret order the
// updates ran in parallel on two agents and landed in any order.
func TestIssue10PerSecretOrder(t *testing.T) {
	emu := awsemu.New(awsemu.Options{})
	emu.SetLatency("", 10*time.Millisecond)
	// AWS holds each reply after serving it: a kill often lands after the
	// change was made and before the manager heard of it.
	awsURL := heldAWS(t, emu, 100*time.Millisecond)
	m := startManager(t, managerOpts{Lease: 2 * time.Second, Heartbeat: 500 * time.Millisecond, MaxAttempts: 10})
	agents := map[string]*proc{}
	opts := agentOpts{Tags: []string{"chaos"}, Concurrency: 8, Endpoints: []string{awsURL}}
	for _, name := range []string{"order-1", "order-2"} {
		agents[name] = startAgent(t, m, name, opts)
	}
	createChaosConnectors(t, m, awsURL)

	const name, n = "ordered", 100
	value := func(i int) string { return "value-" + strconv.Itoa(i) }
	create, err := m.API().Secret(t.Context(), chainOp{kind: opCreate, value: value(0)}.request(name))
	if err == nil && create.GetAsync() {
		create = m.waitFinal(t, 30*time.Second, []string{create.GetId()})[create.GetId()]
	}
	if err != nil || create.GetState() != delegatev1.TaskState_SUCCEEDED {
		t.Fatalf("create %s = %v, %v; want SUCCEEDED", name, create, err)
	}
	ids := make([]string, n)
	for i := range n {
		info, err := m.API().Secret(t.Context(), chainOp{kind: opUpdate, value: value(i + 1)}.request(name))
		if err != nil {
			t.Fatalf("update %d: %v", i+1, err)
		}
		ids[i] = info.GetId()
	}

	// Kill the agent holding the running update, twice, at about a third
	// and two thirds of the way.
	kills := 0
	for _, at := range []int{n / 3, 2 * n / 3} {
		var victim string
		waitFor(t, 90*time.Second, fmt.Sprintf("%d updates done and one running", at), func() error {
			ts, err := m.tasks(t.Context(), ids)
			if err != nil {
				return err
			}
			done := 0
			for _, ti := range ts {
				if ti.GetState() == delegatev1.TaskState_SUCCEEDED {
					done++
				}
			}
			ds, err := m.delegates(t.Context())
			if err != nil {
				return err
			}
			for dn, d := range ds {
				if len(d.GetRunningTasks()) > 0 {
					victim = dn
				}
			}
			if done < at || victim == "" {
				return fmt.Errorf("%d done, running on %q", done, victim)
			}
			return nil
		})
		agents[victim].kill(t)
		kills++
		t.Logf("killed %s", victim)
		time.Sleep(300 * time.Millisecond)
		agents[victim] = startAgent(t, m, victim, opts)
	}

	final := m.waitFinal(t, 3*time.Minute, ids)
	rerun := 0
	for i, id := range ids {
		ti := final[id]
		if ti.GetState() != delegatev1.TaskState_SUCCEEDED {
			t.Errorf("update %d (task %s) = %s %v, want SUCCEEDED", i+1, id, ti.GetState(), ti.GetOutcome())
		}
		if ti.GetAttempt() > 1 {
			rerun++
		}
	}
	t.Logf("%d kills, %d updates re-run", kills, rerun)
	if rerun == 0 {
		t.Errorf("no update was re-run after %d kills: the test proved nothing about re-dispatch", kills)
	}

	st, ok := emu.Secret("chaos/" + name)
	if !ok {
		t.Fatalf("secret chaos/%s is missing at AWS", name)
	}
	var got []string
	current := ""
	for _, v := range st.Versions { // oldest first
		got = append(got, v.SecretString)
		for _, s := range v.Stages {
			if s == "AWSCURRENT" {
				current = v.SecretString
			}
		}
	}
	if current != value(n) {
		t.Errorf("AWSCURRENT holds %q, want %q (the last update submitted)", current, value(n))
	}
	if len(got) != n+1 {
		t.Errorf("the secret has %d versions, want %d (the create and one per update)", len(got), n+1)
	}
	for i, v := range got {
		if v != value(i) {
			t.Errorf("version %d (in creation order) holds %q, want %q: versions were created out of submission order: %q",
				i, v, value(i), got)
			break
		}
	}
}
