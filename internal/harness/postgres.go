package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Postgres is a PostgreSQL server of the caller's own, on 127.0.0.1, that
// it may stop and start again: a test that needs an outage, or a
// benchmark that needs a server when none is given. It is set up as
// scripts/postgres.sh does: initdb in a fresh directory, trust auth for
// loopback only, fsync off; as root, the cluster belongs to the
// "postgres" system user (or "nobody"), since PostgreSQL refuses to run
// as root.
type Postgres struct {
	bin  string // the directory holding initdb and pg_ctl
	dir  string // the cluster's directory, owned by cred's user
	port int
	cred *syscall.Credential // the server's user; nil: this process's
	// DSN connects to the database "postgres" as the superuser smdtest.
	DSN string
}

// StartPostgres initdb's a cluster in a new temporary directory and
// starts it on a free port. Close stops it and removes the directory.
func StartPostgres() (*Postgres, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	s := &Postgres{bin: bin}
	if os.Geteuid() == 0 {
		if s.cred, err = postgresUser(); err != nil {
			return nil, err
		}
	}
	if s.dir, err = os.MkdirTemp("", "smd-pg-"); err != nil {
		return nil, err
	}
	if err := s.init(); err != nil {
		os.RemoveAll(s.dir)
		return nil, err
	}
	for try := 0; ; try++ {
		addr, err := FreeAddr()
		if err != nil {
			s.Close()
			return nil, err
		}
		_, port, _ := strings.Cut(addr, ":")
		s.port, _ = strconv.Atoi(port)
		err = s.Start()
		if err == nil {
			break
		}
		if try == 4 {
			s.Close()
			return nil, fmt.Errorf("start PostgreSQL: %w", err)
		}
	}
	s.DSN = fmt.Sprintf("postgres://smdtest@127.0.0.1:%d/postgres?sslmode=disable", s.port)
	return s, nil
}

func (s *Postgres) init() error {
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return err
		}
	}
	if out, err := s.run(filepath.Join(s.bin, "initdb"), "-D", filepath.Join(s.dir, "data"), "-U", "smdtest",
		"--auth=trust", "--encoding=UTF8", "--no-locale"); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	hba := filepath.Join(s.dir, "hba")
	return os.WriteFile(hba, []byte("local all all trust\nhost all all 127.0.0.1/32 trust\n"), 0o644)
}

// Stop stops the server as an operator would (`pg_ctl stop`, fast mode:
// sessions are ended, the server shuts down cleanly) and waits until it
// is down.
func (s *Postgres) Stop() error {
	return s.pgctl("-w", "-t", "30", "stop")
}

// Start starts the stopped server again, on the same port, and waits
// until it accepts connections.
func (s *Postgres) Start() error {
	return s.pgctl("-l", filepath.Join(s.dir, "server.log"), "-w", "-t", "30", "-o",
		fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c hba_file=%s -c max_connections=300 -c fsync=off -c full_page_writes=off",
			s.port, s.dir, filepath.Join(s.dir, "hba")),
		"start")
}

// Close stops the server at once if it runs (immediate mode) and removes
// its directory.
func (s *Postgres) Close() {
	if _, err := os.Stat(filepath.Join(s.dir, "data", "postmaster.pid")); err == nil {
		_ = s.pgctl("-m", "immediate", "-w", "stop")
	}
	os.RemoveAll(s.dir)
}

// pgctl runs pg_ctl on the cluster; its error carries pg_ctl's output
// and the tail of the server's log.
func (s *Postgres) pgctl(args ...string) error {
	out, err := s.run(filepath.Join(s.bin, "pg_ctl"), append([]string{"-D", filepath.Join(s.dir, "data")}, args...)...)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
		return fmt.Errorf("pg_ctl %s: %w\n%s\nserver log:\n%s", strings.Join(args, " "), err, out, Tail(string(log), 20))
	}
	return nil
}

// run runs a PostgreSQL program as the cluster's owner, from the
// cluster's directory (the owner may not be allowed into ours). Its
// output goes to a file, not a pipe: pg_ctl start leaves the server
// running, which must not hold a pipe of ours open.
func (s *Postgres) run(name string, args ...string) (string, error) {
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
	cmd.Env = append(CleanEnv(), "LC_ALL=C")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	err = cmd.Run()
	out, _ := os.ReadFile(f.Name())
	return string(out), err
}

// PostgresBinDir finds initdb and pg_ctl: on PATH, else in Debian's
// /usr/lib/postgresql/<version>/bin, the newest.
func PostgresBinDir() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
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
			return dirs[i], nil
		}
	}
	return "", errors.New("initdb and pg_ctl not found (on PATH or in /usr/lib/postgresql/*/bin); scripts/tools.sh installs Debian's postgresql")
}

// postgresUser is the user a root process runs the server as: postgres,
// else nobody.
func postgresUser() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 == nil && err2 == nil {
			return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
		}
	}
	return nil, errors.New("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as")
}
