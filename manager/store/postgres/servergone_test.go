package postgres_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/postgres"
)

// TestIssue10ServerGoneIsUnavailable cuts the store off its server (a
// proxy between them stops accepting and drops its connections): every
// call, of tasks and of the catalog, fails promptly with an error
// matching store.ErrUnavailable and none of the answers a caller acts on
// (conflict, not found). Before the cut, the server's own refusal of a
// bad argument is not unavailable.
func TestIssue10ServerGoneIsUnavailable(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	px := startPGProxy(t, dsn)
	db := mustOpen(t, px.dsn, postgres.Options{Schema: schema, CallTimeout: 10 * time.Second})
	defer db.Close()
	ctx := t.Context()
	if err := db.CreateTask(ctx, &store.Task{ID: "before", Kind: "ping"}); err != nil {
		t.Fatalf("CreateTask() = %v", err)
	}
	if _, err := db.GetTask(ctx, "bad\xffid"); err == nil || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("GetTask(invalid UTF-8) = %v, want the server's refusal, not ErrUnavailable", err)
	}

	px.cut()
	calls := map[string]func() error{
		"CreateTask": func() error { return db.CreateTask(ctx, &store.Task{ID: "after", Kind: "ping"}) },
		"GetTask":    func() error { _, err := db.GetTask(ctx, "before"); return err },
		"Claim": func() error {
			return db.Claim(ctx, "before", store.Lease{ID: "l1", Delegate: "d", Attempt: 1})
		},
		"Complete": func() error {
			return db.Complete(ctx, "before", "l1", store.Final{State: store.StateSucceeded, Code: "OK"})
		},
		"ListTasks":      func() error { _, err := db.ListTasks(ctx, store.Filter{}); return err },
		"ListUnfinished": func() error { _, err := db.ListUnfinished(ctx); return err },
		"GetConnector":   func() error { _, err := db.GetConnector(ctx, store.Scope{}, "c"); return err },
		"DelegateTags":   func() error { _, err := db.DelegateTags(ctx); return err },
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s with the server gone = %v, want an error matching store.ErrUnavailable only", name, err)
		}
	}
}

// pgProxy forwards TCP connections to the test server until cut.
type pgProxy struct {
	ln  net.Listener
	dsn string // the test server's DSN, through the proxy

	mu    sync.Mutex
	conns []net.Conn
}

func startPGProxy(t *testing.T, dsn string) *pgProxy {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	target := net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{ln: ln}
	port := ln.Addr().(*net.TCPAddr).Port
	if u, err := url.Parse(dsn); err == nil && strings.Contains(dsn, "://") {
		u.Host = fmt.Sprintf("127.0.0.1:%d", port)
		p.dsn = u.String()
	} else {
		p.dsn = fmt.Sprintf("%s host=127.0.0.1 port=%d", dsn, port) // a later key wins
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() { _, _ = io.Copy(c, s); c.Close() }()
		}
	}()
	t.Cleanup(p.cut)
	return p
}

// cut stops accepting and drops every connection: the server is gone.
func (p *pgProxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
