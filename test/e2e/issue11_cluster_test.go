package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// clusterList runs `smd cluster list -o json` against r, as an operator.
func clusterList(t testing.TB, r *manager) (*delegatev1.ListReplicasResponse, error) {
	t.Helper()
	out, errOut, code := smdCLI(t, r, "cluster", "list", "-o", "json")
	if code != 0 {
		return nil, fmt.Errorf("smd cluster list exited %d: %s", code, errOut)
	}
	var resp delegatev1.ListReplicasResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		return nil, fmt.Errorf("smd cluster list -o json: %v\n%s", err, out)
	}
	return &resp, nil
}

// seesReplicas checks that r lists exactly the replicas whose pids are
// given, all alive, itself marked; it returns r's replica ID.
func seesReplicas(t testing.TB, r *manager, pids ...int) (string, error) {
	t.Helper()
	resp, err := clusterList(t, r)
	if err != nil {
		return "", err
	}
	var self string
	got := map[int]bool{}
	for _, ri := range resp.GetReplicas() {
		if !ri.GetAlive() {
			return "", fmt.Errorf("replica %s (pid %d) listed dead", ri.GetId(), ri.GetPid())
		}
		got[int(ri.GetPid())] = true
		if ri.GetSelf() {
			if int(ri.GetPid()) != r.proc.pid() || ri.GetAdvertise() != r.Addr {
				return "", fmt.Errorf("self row %v: want pid %d advertising %s", ri, r.proc.pid(), r.Addr)
			}
			self = ri.GetId()
		}
	}
	if len(got) != len(pids) || self == "" {
		return "", fmt.Errorf("%s lists %v, want pids %v with itself marked", r.Addr, resp.GetReplicas(), pids)
	}
	for _, p := range pids {
		if !got[p] {
			return "", fmt.Errorf("%s does not list pid %d: %v", r.Addr, p, resp.GetReplicas())
		}
	}
	return self, nil
}

func pids(rs []*manager) []int {
	var out []int
	for _, r := range rs {
		out = append(out, r.proc.pid())
	}
	return out
}

// TestIssue11ReplicasShareOneSchema: three `smd manager` replicas of one
// cluster start on one PostgreSQL schema and each lists all three
// (`smd cluster list`, smd_cluster_replicas). A fourth manager with
// another cluster name, and one without cluster:, are refused: they exit
// non-zero before listening, naming the processes holding the database,
// and the replicas go on serving.
func TestIssue11ReplicasShareOneSchema(t *testing.T) {
	rs := startReplicas(t, 3, managerOpts{})
	for _, r := range rs {
		waitFor(t, 30*time.Second, "each replica to list all three", func() error {
			_, err := seesReplicas(t, r, pids(rs)...)
			return err
		})
		waitFor(t, 30*time.Second, "smd_cluster_replicas 3", func() error {
			if got := r.metrics(t)["smd_cluster_replicas"]; got != 3 {
				return fmt.Errorf("smd_cluster_replicas = %v", got)
			}
			return nil
		})
	}
	out, _, code := smdCLI(t, rs[1], "cluster", "list")
	if code != 0 || !strings.HasPrefix(out, "cluster e2e\n") || countLines(out, "alive") != 3 || countLines(out, " *") != 1 {
		t.Errorf("smd cluster list = %d:\n%s\nwant cluster e2e, three alive replicas, one marked *", code, out)
	}

	for _, tc := range []struct {
		name  string
		tweak func(cfg map[string]any)
	}{
		{"other-cluster", func(cfg map[string]any) { cfg["cluster"].(map[string]any)["name"] = "other" }},
		{"single", func(cfg map[string]any) { delete(cfg, "cluster") }},
	} {
		c := rs[0].clone(t, tc.tweak)
		p := startProc(t, c.dir, "manager-"+tc.name, c.env, "manager", "-c", c.configPath)
		if code := p.wait(t, 60*time.Second); code == 0 {
			t.Fatalf("%s manager on the cluster's database exited 0, want non-zero:\n%s", tc.name, tail(p.log(), 20))
		}
		log := p.log()
		if strings.Contains(log, `"manager started"`) || readyz(c.HTTPAddr) != 0 {
			t.Errorf("the refused %s manager started listening", tc.name)
		}
		if !strings.Contains(log, `"e2e"`) {
			t.Errorf("the refused %s manager does not name the cluster holding the database (e2e):\n%s", tc.name, tail(log, 20))
		}
		for _, r := range rs {
			if !strings.Contains(log, fmt.Sprintf("pid %d", r.proc.pid())) {
				t.Errorf("the refused %s manager does not name replica pid %d:\n%s", tc.name, r.proc.pid(), tail(log, 20))
			}
		}
	}
	for _, r := range rs {
		if _, err := seesReplicas(t, r, pids(rs)...); err != nil {
			t.Errorf("after the refusals: %v", err)
		}
	}
}

// TestIssue11DeadReplicaDropped: a replica SIGKILLed (no Leave) is found
// dead by the others once its heartbeat is cluster.dead_after old, and
// dropped: it leaves their `smd cluster list`, and one of them logs it.
// A replica stopped with SIGTERM leaves by itself: exit 0, gone from the
// list, and nobody finds it dead.
func TestIssue11DeadReplicaDropped(t *testing.T) {
	rs := startReplicas(t, 3, managerOpts{})
	var victim, leaver string
	waitFor(t, 30*time.Second, "the victim to list all three", func() error {
		var err error
		victim, err = seesReplicas(t, rs[2], pids(rs)...)
		return err
	})
	waitFor(t, 30*time.Second, "the leaver to list all three", func() error {
		var err error
		leaver, err = seesReplicas(t, rs[1], pids(rs)...)
		return err
	})
	rs[2].proc.kill(t)
	for _, r := range rs[:2] {
		waitFor(t, 30*time.Second, "the killed replica to leave the list", func() error {
			_, err := seesReplicas(t, r, pids(rs[:2])...)
			return err
		})
	}
	if n := countLines(rs[0].proc.log()+rs[1].proc.log(), "replica found dead", victim); n < 1 {
		t.Errorf("no survivor logged finding %s dead", victim)
	}

	rs[1].proc.signal(t, syscall.SIGTERM)
	if code := rs[1].proc.wait(t, 60*time.Second); code != 0 {
		t.Errorf("replica stopped with SIGTERM exited %d, want 0", code)
	}
	waitFor(t, 30*time.Second, "the stopped replica to leave the list", func() error {
		_, err := seesReplicas(t, rs[0], rs[0].proc.pid())
		return err
	})
	if n := countLines(rs[0].proc.log(), "replica found dead", leaver); n != 0 {
		t.Errorf("the survivor found the replica stopped with SIGTERM dead (%d lines), want it to have left", n)
	}
}
