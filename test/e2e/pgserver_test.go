package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pgServer is a PostgreSQL server of one test's own, on 127.0.0.1, that
// the test may stop and start again (the suite's shared server, in
// SMD_TEST_POSTGRES_DSN, must stay up for the others). It is set up as
// scripts/postgres.sh does: initdb in a fresh directory, trust auth for
// loopback only, fsync off; as root, the cluster belongs to the
// "postgres" system user (or "nobody"), since PostgreSQL refuses to run
// as root.
type pgServer struct {
	bin  string // the directory holding initdb and pg_ctl
	dir  string // the cluster's directory, owned by cred's user
	port int
	cred *syscall.Credential // the server's user; nil: this process's
	// DSN connects to the database "postgres" as the superuser smdtest.
	DSN string
}

// startPGServer initdb's a cluster and starts it on a free port; the
// cluster is stopped (immediate) and removed when t ends.
func startPGServer(t testing.TB) *pgServer {
	t.Helper()
	s := &pgServer{bin: pgBinDir(t)}
	if os.Geteuid() == 0 {
		s.cred = pgUser(t)
	}
	dir, err := os.MkdirTemp("", "smd-e2e-pg-")
	if err != nil {
		t.Fatal(err)
	}
	s.dir = dir
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(s.dir, "data", "postmaster.pid")); err == nil {
			_ = s.pgctl("-m", "immediate", "-w", "stop")
		}
		os.RemoveAll(s.dir)
	})
	if s.cred != nil {
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := s.run(filepath.Join(s.bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "smdtest",
		"--auth=trust", "--encoding=UTF8", "--no-locale"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	hba := filepath.Join(dir, "hba")
	if err := os.WriteFile(hba, []byte("local all all trust\nhost all all 127.0.0.1/32 trust\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for try := 0; ; try++ {
		s.port = freePort(t)
		err := s.start()
		if err == nil {
			break
		}
		if try == 4 {
			t.Fatalf("start PostgreSQL: %v", err)
		}
	}
	s.DSN = fmt.Sprintf("postgres://smdtest@127.0.0.1:%d/postgres?sslmode=disable", s.port)
	return s
}

// Stop stops the server as an operator would (`pg_ctl stop`, fast mode:
// sessions are ended, the server shuts down cleanly) and waits until it
// is down.
func (s *pgServer) Stop(t testing.TB) {
	t.Helper()
	if err := s.pgctl("-w", "-t", "30", "stop"); err != nil {
		t.Fatalf("pg_ctl stop: %v", err)
	}
}

// Start starts the stopped server again, on the same port, and waits
// until it accepts connections.
func (s *pgServer) Start(t testing.TB) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatalf("pg_ctl start: %v", err)
	}
}

func (s *pgServer) start() error {
	return s.pgctl("-l", filepath.Join(s.dir, "server.log"), "-w", "-t", "30", "-o",
		fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c hba_file=%s -c max_connections=300 -c fsync=off -c full_page_writes=off",
			s.port, s.dir, filepath.Join(s.dir, "hba")),
		"start")
}

// pgctl runs pg_ctl on the cluster; its error carries pg_ctl's output
// and the tail of the server's log.
func (s *pgServer) pgctl(args ...string) error {
	out, err := s.run(filepath.Join(s.bin, "pg_ctl"), append([]string{"-D", filepath.Join(s.dir, "data")}, args...)...)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
		return fmt.Errorf("pg_ctl %s: %w\n%s\nserver log:\n%s", strings.Join(args, " "), err, out, tail(string(log), 20))
	}
	return nil
}

// run runs a PostgreSQL program as the cluster's owner, from the
// cluster's directory (the owner may not be allowed into ours). Its
// output goes to a file, not a pipe: pg_ctl start leaves the server
// running, which must not hold a pipe of ours open.
func (s *pgServer) run(name string, args ...string) (string, error) {
	f, err := os.CreateTemp(s.dir, "cmd-*.log")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(cleanEnv(), "LC_ALL=C")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	err = cmd.Run()
	out, _ := os.ReadFile(f.Name())
	return string(out), err
}

// pgBinDir finds initdb and pg_ctl: on PATH, else in Debian's
// /usr/lib/postgresql/<version>/bin, the newest.
func pgBinDir(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p)
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return va - vb
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "pg_ctl")); err == nil {
			return dirs[i]
		}
	}
	t.Fatal("initdb and pg_ctl not found (on PATH or in /usr/lib/postgresql/*/bin): this test runs a PostgreSQL server of its own; scripts/tools.sh installs Debian's postgresql")
	return ""
}

// pgUser is the user a root test runs the server as: postgres, else
// nobody.
func pgUser(t testing.TB) *syscall.Credential {
	t.Helper()
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 == nil && err2 == nil {
			return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		}
	}
	t.Fatal("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as")
	return nil
}

// freePort returns a 127.0.0.1 port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	_, port, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
