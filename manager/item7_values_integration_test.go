package manager_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/ids"
	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/bolt"
	"github.com/smdelegate/smdelegate/manager/store/postgres/pgtest"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// storedTask is a task as the attacker of item 7 reads it: the store
// opened directly, the payload unsealed with the master key.
type storedTask struct {
	id, state string
	payload   []byte // unsealed
	outcome   []byte
}

// storeDump is everything the attacker finds: every task, and every byte
// of the store as it reads it (the bolt file; every row of every table).
type storeDump struct {
	tasks map[string]storedTask
	raw   []byte
}

// item7Store is one store driver for the attack: how the manager is
// pointed at it, how the attacker reads it, and how a task is made to
// look as an older manager left it.
type item7Store struct {
	tweak  func(*manager.Config)
	dump   func(t *testing.T) storeDump
	legacy func(t *testing.T, id string)
}

func unsealed(t *testing.T, id string, payload []byte) []byte {
	t.Helper()
	s, err := seal.New(testMasterKey)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Open(payload, []byte("task/"+id))
	if err != nil {
		t.Fatalf("unseal the payload of task %s: %v", id, err)
	}
	return p
}

func boltItem7(dir string) item7Store {
	path := filepath.Join(dir, bolt.FileName)
	return item7Store{
		tweak: func(*manager.Config) {},
		dump: func(t *testing.T) storeDump {
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			db, err := bolt.Open(path, bolt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ts, err := db.ListTasks(t.Context(), store.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			d := storeDump{tasks: map[string]storedTask{}, raw: raw}
			for _, st := range ts {
				d.tasks[st.ID] = storedTask{st.ID, string(st.State), unsealed(t, st.ID, st.Payload), st.Outcome}
			}
			return d
		},
		// What an older manager's Complete left: the record of codec
		// version 3 (the layout of 4, which is 5 without the order key
		// at the end; the version byte comes first, the state code
		// second, see manager/store/bolt/codec.go), state succeeded, the
		// payload it was created with, and out of the unfinished index.
		legacy: func(t *testing.T, id string) {
			sdb, err := bolt.Open(path, bolt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			st, err := sdb.GetTask(t.Context(), id)
			sdb.Close()
			if err != nil || len(st.OrderKey) > 127 {
				t.Fatalf("GetTask(%s) = %v, %v; want a task with an order key under 128 bytes", id, st, err)
			}
			db, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			err = db.Update(func(tx *bbolt.Tx) error {
				tasks := tx.Bucket([]byte("tasks"))
				v := bytes.Clone(tasks.Get([]byte(id)))
				if len(v) < 2 {
					t.Fatalf("no task %s in the bolt file", id)
				}
				v[0], v[1] = 3, 3
				v = v[:len(v)-1-len(st.OrderKey)] // its length (one byte) and the key
				if err := tasks.Put([]byte(id), v); err != nil {
					return err
				}
				unfinished := tx.Bucket([]byte("unfinished"))
				var keys [][]byte
				_ = unfinished.ForEach(func(k, _ []byte) error {
					if bytes.HasSuffix(k, []byte(id)) {
						keys = append(keys, bytes.Clone(k))
					}
					return nil
				})
				for _, k := range keys {
					if err := unfinished.Delete(k); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		},
	}
}

func postgresItem7(dsn string) item7Store {
	query := func(t *testing.T, fn func(ctx context.Context, conn *pgx.Conn)) {
		ctx := t.Context()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		fn(ctx, conn)
	}
	return item7Store{
		tweak: func(c *manager.Config) { c.Store = manager.StoreConfig{Driver: manager.StorePostgres, DSN: dsn} },
		dump: func(t *testing.T) storeDump {
			d := storeDump{tasks: map[string]storedTask{}}
			query(t, func(ctx context.Context, conn *pgx.Conn) {
				rows, err := conn.Query(ctx, "SELECT id, state, payload, outcome FROM tasks")
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					var st storedTask
					var payload []byte
					if err := rows.Scan(&st.id, &st.state, &payload, &st.outcome); err != nil {
						t.Fatal(err)
					}
					st.payload = unsealed(t, st.id, payload)
					d.tasks[st.id] = st
				}
				if err := rows.Err(); err != nil {
					t.Fatal(err)
				}
				// Every row of every table of the store, as text (bytea
				// as hex, which check searches too).
				tables, err := conn.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
				if err != nil {
					t.Fatal(err)
				}
				names, err := pgx.CollectRows(tables, pgx.RowTo[string])
				if err != nil || len(names) < 2 {
					t.Fatalf("tables of the store: %q, %v", names, err)
				}
				for _, n := range names {
					rows, err := conn.Query(ctx, "SELECT x::text FROM "+pgx.Identifier{n}.Sanitize()+" x")
					if err != nil {
						t.Fatal(err)
					}
					texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
					if err != nil {
						t.Fatal(err)
					}
					d.raw = append(d.raw, strings.Join(texts, "\n")...)
				}
			})
			return d
		},
		// What an older manager's Complete left: final, with the
		// payload it was created with, not marked scrubbed.
		legacy: func(t *testing.T, id string) {
			query(t, func(ctx context.Context, conn *pgx.Conn) {
				tag, err := conn.Exec(ctx, "UPDATE tasks SET state = 'succeeded', code = 'OK', payload_scrubbed = false WHERE id = $1", id)
				if err != nil || tag.RowsAffected() != 1 {
					t.Fatalf("make task %s legacy: %v, %d rows", id, err, tag.RowsAffected())
				}
			})
		},
	}
}

// TestItem7FinishedTasksKeepNoValue performs item 7's attack on both
// stores: values are written through real tasks (create, superseding
// updates, binary values, upserts, a failed create, a create that no
// delegate took, a generated value), then the attacker opens the store
// with the master key and searches every task's unsealed payload and
// outcome, and every byte it can read, for the planted values: none is
// there. An unfinished task still has its value (it needs it to run).
// That task, rewritten as an older manager would have finished it (final,
// whole payload), loses its value at the next start.
//
// bbolt does not zero the pages a transaction frees, so an old sealed
// payload may remain in the file's free space until bbolt reuses the page
// (docs/architecture.md); the attacker here reads the live records and
// searches the whole file for plaintext.
func TestItem7FinishedTasksKeepNoValue(t *testing.T) {
	t.Parallel()
	t.Run("bolt", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		runItem7(t, dir, boltItem7(dir))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		dsn, _ := pgtest.Database(t)
		runItem7(t, t.TempDir(), postgresItem7(dsn))
	})
}

func runItem7(t *testing.T, dir string, st item7Store) {
	keyID, keySecret := "AKIAITEM7"+ids.Random()[:8], "item7-cred-"+ids.Random()
	emu, emuURL := mustEmu(t, awsemu.Options{Region: emuRegion, Credentials: map[string]string{keyID: keySecret}})
	log, _ := bufferLogger(t)
	tweak := func(c *manager.Config) {
		c.Dispatch.QueueTimeout = config.Duration(time.Second) // the create no delegate takes
		st.tweak(c)
	}
	srv := mustManagerAt(t, dir, log, tweak)
	held := make(chan struct{})
	defer close(held)
	startSecretAgent(t, srv.Addr(), "item7-agent", nil, log, func(ctx context.Context, task *delegatev1.Task) {
		if task.GetPayload().GetSecret().GetCreate().GetName() == "held" {
			select {
			case <-held:
			case <-ctx.Done():
			}
		}
	})
	c, ctx := operator(t, srv.Addr())
	waitDelegates(t, c, ctx, 1)
	if _, err := c.PutCredential(ctx, &delegatev1.PutCredentialRequest{Name: "k", Value: []byte(keySecret)}); err != nil {
		t.Fatalf("PutCredential: %v", err)
	}
	for id, sel := range map[string]string{"c": "item7-agent", "nobody": "no-such-delegate"} {
		if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: &delegatev1.Connector{
			Identifier: id, Name: id, CredentialType: delegatev1.CredentialType_ACCESS_KEY,
			AccessKeyId: keyID, SecretAccessKey: "builtin:k", Region: emuRegion, EndpointUrl: emuURL,
			DelegateSelectors: []string{sel},
		}}); err != nil {
			t.Fatalf("CreateConnector(%s): %v", id, err)
		}
	}

	planted := map[string]string{} // what → value
	plant := func(what string) string {
		v := "item7-" + what + "-" + ids.Random()
		planted[what] = v
		return v
	}
	str := func(v string) *delegatev1.SecretValue {
		return &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: v}}
	}
	bin := func(v string) *delegatev1.SecretValue {
		return &delegatev1.SecretValue{Value: &delegatev1.SecretValue_BinaryValue{BinaryValue: []byte(v)}}
	}
	run := func(connector string, async bool, want delegatev1.TaskState, req *delegatev1.SecretRequest) *delegatev1.TaskInfo {
		t.Helper()
		req.Connector, req.Async = &delegatev1.ConnectorRef{Identifier: connector}, async
		info, err := c.Secret(ctx, req)
		if err != nil {
			t.Fatalf("Secret(%v) = %v", req.GetOp(), err)
		}
		if async {
			info = waitTask(t, c, ctx, info.GetId(), 20*time.Second)
		}
		if info.GetState() != want {
			t.Fatalf("Secret(%v) = %v, want %s", req.GetOp(), info, want)
		}
		return info
	}
	ok, failed := delegatev1.TaskState_SUCCEEDED, delegatev1.TaskState_FAILED
	run("c", true, ok, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "s1", Value: str(plant("create"))}}})
	run("c", true, ok, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Update{Update: &delegatev1.UpdateSecretOp{Name: "s1", Value: str(plant("superseding-update"))}}})
	run("c", false, ok, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Update{Update: &delegatev1.UpdateSecretOp{Name: "s1", Value: bin(plant("binary-update"))}}})
	run("c", true, ok, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Upsert{Upsert: &delegatev1.UpsertSecretOp{Name: "s2", Value: bin(plant("binary-upsert"))}}})
	run("c", false, ok, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Upsert{Upsert: &delegatev1.UpsertSecretOp{Name: "s2", Value: str(plant("upsert-update"))}}})
	run("c", false, failed, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "s1", Value: str(plant("failed-create"))}}})
	gen := run("c", false, ok, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "gen",
		Generate: &delegatev1.GeneratePassword{Length: 40}, ReturnValue: true}}})
	if planted["generated"] = gen.GetOutcome().GetSecret().GetValue().GetStringValue(); len(planted["generated"]) != 40 {
		t.Fatalf("generated value = %q, want 40 characters", planted["generated"])
	}
	run("nobody", true, failed, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "s3", Value: str(plant("no-delegate"))}}})
	heldValue := plant("unfinished")
	heldInfo, err := c.Secret(ctx, &delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Identifier: "c"}, Async: true,
		Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "held", Value: str(heldValue)}}})
	if err != nil {
		t.Fatalf("Secret(create held) = %v", err)
	}
	waitFor(t, 10*time.Second, func() bool {
		got, err := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: heldInfo.GetId()})
		return err == nil && got.GetState() == delegatev1.TaskState_LEASED
	}, "the held create to be leased")
	// The values did go through real tasks to AWS.
	if s1, ok := emu.Secret("s1"); !ok || len(s1.Versions) < 3 {
		t.Fatalf("the emulator holds %+v for s1, want 3 versions", s1)
	}
	srv.Close(context.Background())

	check := func(t *testing.T, d storeDump, unfinished map[string]string) {
		t.Helper()
		if len(d.tasks) < 9 {
			t.Fatalf("found %d tasks in the store, want 9", len(d.tasks))
		}
		for what, v := range planted {
			for _, form := range []string{v, hex.EncodeToString([]byte(v))} {
				if bytes.Contains(d.raw, []byte(form)) {
					t.Errorf("the store's bytes hold the %s value", what)
				}
			}
			for _, task := range d.tasks {
				if bytes.Contains(task.outcome, []byte(v)) {
					t.Errorf("the outcome of task %s (%s) holds the %s value", task.id, task.state, what)
				}
				got, want := bytes.Contains(task.payload, []byte(v)), unfinished[task.id] == v
				if got != want {
					t.Errorf("the unsealed payload of task %s (%s): holds the %s value = %v, want %v", task.id, task.state, what, got, want)
				}
			}
		}
		// What is kept still says what the task did.
		for _, task := range d.tasks {
			p := &delegatev1.TaskPayload{}
			if err := proto.Unmarshal(task.payload, p); err != nil || p.GetSecret() == nil {
				t.Errorf("the kept payload of task %s does not decode: %v", task.id, err)
			}
		}
	}
	t.Run("the attacker finds no finished task's value", func(t *testing.T) {
		check(t, st.dump(t), map[string]string{heldInfo.GetId(): heldValue})
	})
	t.Run("a task finished the old way is scrubbed at the next start", func(t *testing.T) {
		st.legacy(t, heldInfo.GetId())
		if d := st.dump(t); !bytes.Contains(d.tasks[heldInfo.GetId()].payload, []byte(heldValue)) || d.tasks[heldInfo.GetId()].state != "succeeded" {
			t.Fatalf("the legacy task is %s and holds its value = false: the setup is wrong", d.tasks[heldInfo.GetId()].state)
		}
		again := mustManagerAt(t, dir, log, tweak)
		again.Close(context.Background())
		check(t, st.dump(t), nil)
	})
}
