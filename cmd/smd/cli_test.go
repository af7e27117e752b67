package main

// Process-level tests of the smd CLI. TestMain builds the real binary and
// starts one `smd dev` (manager, agent "dev", AWS emulator and the sample
// connector dev_aws, all on 127.0.0.1:0 with a temporary data dir); the
// tests then run the binary as an operator would, with the SMD_* variables
// that smd dev writes to its --env-file.
//
// Every test shares that one smd dev, also across -count=N, so each leaves
// the state in the default scope as it found it: connectors and
// credentials a test needs live in a scope of its own and are deleted on
// cleanup; secrets are force-deleted. The only sequential test,
// TestJSONOutputGolden, is the one that reads the shared state (the
// delegate's tags and running tasks, the default scope's connectors and
// credentials); the others run in parallel after it.
//
// With -short the binary is not built and these tests are skipped.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/internal/harness"
)

// The smd dev that every test talks to, set up by TestMain.
var (
	smdBin string   // the built binary
	devEnv []string // SMD_MANAGER=, SMD_TOKEN=, SMD_INSECURE= from smd dev's --env-file
	devLog string   // smd dev's stderr (its log, at debug level)
	devOut string   // smd dev's stdout (its banner)
	devOK  bool     // smd dev is running
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "smd-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "cmd/smd:", err)
		os.Exit(1)
	}
	code := 1
	stop, err := startDev(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cmd/smd: start smd dev:", err)
	} else {
		devOK = true
		code = m.Run()
		if err := stop(); err != nil {
			fmt.Fprintln(os.Stderr, "cmd/smd: stop smd dev:", err)
			code = 1
		}
	}
	if b, _ := os.ReadFile(devLog); code != 0 && len(b) > 0 {
		fmt.Fprintf(os.Stderr, "---- tail of the smd dev log ----\n%s\n", tail(string(b), 40))
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// startDev builds smd into dir, starts smd dev and waits for its env file.
// stop ends it with SIGTERM (SIGKILL after 10 s) and reports a crash or a
// panic in its log.
func startDev(dir string) (stop func() error, err error) {
	if smdBin, err = harness.BuildSmd(dir, nil); err != nil {
		return nil, err
	}
	data, envFile := filepath.Join(dir, "data"), filepath.Join(dir, "dev.env")
	if err := os.Mkdir(data, 0o700); err != nil {
		return nil, err
	}
	devLog = filepath.Join(dir, "dev.log")
	logf, err := os.Create(devLog)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	devOut = filepath.Join(dir, "dev.out")
	banner, err := os.Create(devOut)
	if err != nil {
		return nil, err
	}
	defer banner.Close()
	cmd := exec.Command(smdBin, "dev", "--env-file", envFile, "--data-dir", data, "--log-level", "debug",
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--aws-listen", "127.0.0.1:0")
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = banner, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		var err error
		select {
		case err = <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			err = errors.New("did not stop within 10s of SIGTERM; killed")
		}
		if b, _ := os.ReadFile(devLog); strings.Contains(string(b), "panic: ") || strings.Contains(string(b), "DATA RACE") {
			return errors.Join(err, errors.New("its log holds a panic or a data race"))
		}
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(envFile)
		if err == nil {
			devEnv = strings.Fields(string(b))
			if len(devEnv) != 3 {
				stop()
				return nil, fmt.Errorf("env file %s: want 3 SMD_ lines, got %q", envFile, b)
			}
			return stop, nil
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(devLog)
			return nil, fmt.Errorf("exited before it was ready: %v\n%s", err, tail(string(b), 20))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, errors.New("no env file after 30s")
		}
	}
}

// cleanEnv is the test's environment without SMD_* variables, so that an
// operator's shell cannot change what the tests run.
func cleanEnv() []string { return harness.CleanEnv() }

func tail(s string, n int) string { return harness.Tail(s, n) }

// needDev skips the test when smd dev is not running (-short).
func needDev(t testing.TB) {
	t.Helper()
	if !devOK {
		t.Skip("process test: needs the smd binary and smd dev (skipped with -short)")
	}
}

// result is what one run of the CLI did.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// run is smd ARGS... with the dev env and stdin (none: /dev/null).
func run(t testing.TB, stdin string, args ...string) result {
	t.Helper()
	return runEnv(t, nil, stdin, args...)
}

// runEnv is run with extra KEY=VALUE variables, later ones winning over
// the dev env.
func runEnv(t testing.TB, env []string, stdin string, args ...string) result {
	t.Helper()
	needDev(t)
	// Not t.Context(): cleanups run commands too, after it is cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, smdBin, args...)
	cmd.Env = append(append(cleanEnv(), devEnv...), env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		t.Fatalf("smd %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustRun is run that fails the test unless smd exits 0.
func mustRun(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	r := run(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("smd %s: %v", strings.Join(args, " "), r)
	}
	return r.stdout
}

// readDevLog returns smd dev's log so far.
func readDevLog(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(devLog)
	if err != nil {
		t.Fatalf("read the smd dev log: %v", err)
	}
	return string(b)
}

// devVar returns the value of KEY in the dev env.
func devVar(key string) string {
	for _, kv := range devEnv {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	needDev(t)
	tests := []struct {
		name   string
		env    []string
		stdin  string
		args   []string
		code   int
		stderr string // a substring of the error
	}{
		{name: "connector not found", args: []string{"connector", "get", "nope"}, code: exitNotFound, stderr: `connector "nope" not found`},
		{name: "task not found", args: []string{"task", "get", "nope"}, code: exitNotFound, stderr: "not found"},
		{name: "output yaml", args: []string{"connector", "list", "--output", "yaml"}, code: exitInvalid, stderr: "--output: must be table or json"},
		{name: "output yaml short", args: []string{"delegate", "list", "-o", "yaml"}, code: exitInvalid, stderr: "--output"},
		{name: "unknown flag", args: []string{"connector", "list", "--bogus"}, code: exitInvalid, stderr: "unknown flag: --bogus"},
		{name: "flag missing its value", args: []string{"connector", "get", "dev_aws", "--scope"}, code: exitInvalid, stderr: "--scope"},
		{name: "unknown command", args: []string{"bogus"}, code: exitInvalid, stderr: `unknown command "bogus"`},
		{name: "unknown subcommand", args: []string{"connector", "bogus"}, code: exitInvalid, stderr: `unknown command "bogus" for "smd connector"`},
		{name: "missing argument", args: []string{"connector", "get"}, code: exitInvalid, stderr: "accepts 1 arg(s), received 0"},
		{name: "extra argument", args: []string{"task", "get", "a", "b"}, code: exitInvalid, stderr: "accepts 1 arg(s), received 2"},
		{name: "secret value empty stdin", args: []string{"secret", "create", "exit-codes-empty", "--wait"}, code: exitInvalid, stderr: "value: must not be empty"},
		{name: "secret value empty file", args: []string{"secret", "create", "exit-codes-empty", "--value-file", os.DevNull}, code: exitInvalid, stderr: "value: must not be empty"},
		{name: "secret value file missing", args: []string{"secret", "create", "exit-codes-empty", "--value-file", "/nonexistent/value"}, code: exitInvalid, stderr: "--value-file"},
		{name: "show without generate", stdin: "v", args: []string{"secret", "create", "exit-codes-show", "--show"}, code: exitInvalid, stderr: "--show: only with --generate"},
		{name: "length without generate", stdin: "v", args: []string{"secret", "create", "exit-codes-show", "--length", "8"}, code: exitInvalid, stderr: "--length: only with --generate"},
		{name: "generate and a value file", args: []string{"secret", "create", "exit-codes-gen", "--generate", "--value-file", os.DevNull}, code: exitInvalid, stderr: "--generate: the value is generated"},
		{name: "generate length", args: []string{"secret", "create", "exit-codes-gen", "--generate", "--length", "0"}, code: exitInvalid, stderr: "--length: must be 1-4096"},
		{name: "adopt and force", stdin: "v", args: []string{"secret", "update", "exit-codes-x", "--adopt", "--force"}, code: exitInvalid, stderr: "--adopt and --force: give at most one"},
		{name: "tag nothing", args: []string{"secret", "tag", "exit-codes-x"}, code: exitInvalid, stderr: "--add or --remove"},
		{name: "tag malformed", args: []string{"secret", "tag", "exit-codes-x", "--add", "novalue"}, code: exitInvalid, stderr: `--add: want key=value, got "novalue"`},
		{name: "delegate tag nothing", args: []string{"delegate", "tag", "dev"}, code: exitInvalid, stderr: "--add, --remove or --confirm"},
		{name: "delegate tag reserved", args: []string{"delegate", "tag", "dev", "--add", " SMD:x"}, code: exitInvalid, stderr: "add[0]: must not start with smd:"},
		{name: "delegate confirm not connected", args: []string{"delegate", "tag", "exit-codes-nobody", "--confirm"}, code: exitNotFound, stderr: `delegate "exit-codes-nobody" is not connected: --confirm`},
		{name: "binary not base64", stdin: "not*base64", args: []string{"secret", "create", "exit-codes-bin", "--binary"}, code: exitInvalid, stderr: "--binary: the value is not valid base64"},
		{name: "bad scope", args: []string{"connector", "list", "--scope", "a/b/c/d"}, code: exitInvalid, stderr: "--scope"},
		{name: "bad task state", args: []string{"task", "list", "--state", "nope"}, code: exitInvalid, stderr: "--state"},
		{name: "token wrong", env: []string{"SMD_TOKEN=wrong"}, args: []string{"connector", "list"}, code: exitDenied, stderr: "permission denied"},
		{name: "token wrong on a write", env: []string{"SMD_TOKEN=wrong"}, stdin: "v", args: []string{"secret", "create", "exit-codes-denied", "--wait"}, code: exitDenied, stderr: "permission denied"},
		{name: "token missing", env: []string{"SMD_TOKEN="}, args: []string{"connector", "list"}, code: exitInvalid, stderr: "--token"},
		{name: "manager unreachable", env: []string{"SMD_MANAGER=127.0.0.1:1"}, args: []string{"connector", "list"}, code: exitUnavailable, stderr: "manager unavailable"},
		{name: "manager unreachable json", env: []string{"SMD_MANAGER=127.0.0.1:1"}, args: []string{"delegate", "list", "-o", "json"}, code: exitUnavailable, stderr: "manager unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runEnv(t, tt.env, tt.stdin, tt.args...)
			if r.code != tt.code {
				t.Errorf("smd %s: exit %d, want %d\n%v", strings.Join(tt.args, " "), r.code, tt.code, r)
			}
			if !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("smd %s: stderr = %q, want it to contain %q", strings.Join(tt.args, " "), r.stderr, tt.stderr)
			}
			if !strings.HasPrefix(r.stderr, "smd: ") || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("smd %s: stderr = %q, want one line starting with \"smd: \"", strings.Join(tt.args, " "), r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("smd %s: stdout = %q, want it empty (errors go to stderr)", strings.Join(tt.args, " "), r.stdout)
			}
		})
	}
}

func TestShellCompletion(t *testing.T) {
	t.Parallel()
	r := run(t, "", "completion", "bash")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("smd completion bash: %v", r)
	}
	for _, want := range []string{"# bash completion V2 for smd", "__start_smd", "complete -o default -F __start_smd smd"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("smd completion bash: output lacks %q", want)
		}
	}
	// The script asks the binary for its words; the binary must name the
	// subcommands.
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", ""}, []string{"connector", "secret", "delegate", "task", "credential", "dev", "manager", "agent", "completion"}},
		{[]string{"__complete", "connector", ""}, []string{"create", "get", "list", "delete", "test", "update"}},
		{[]string{"__complete", "secret", ""}, []string{"create", "get", "describe", "list", "delete", "restore", "upsert", "update", "tag", "versions"}},
	} {
		r := run(t, "", tt.args...)
		if r.code != 0 {
			t.Fatalf("smd %s: %v", strings.Join(tt.args, " "), r)
		}
		words := map[string]bool{}
		for _, line := range strings.Split(r.stdout, "\n") {
			w, _, _ := strings.Cut(line, "\t")
			words[w] = true
		}
		for _, w := range tt.want {
			if !words[w] {
				t.Errorf("smd %s: completions lack %q:\n%s", strings.Join(tt.args, " "), w, r.stdout)
			}
		}
	}
}

func TestSecretValueNeverOnCommandLineOrLogs(t *testing.T) {
	t.Parallel()
	needDev(t)
	// Values no log line could hold by chance.
	value := "leak-canary-" + randomToken("")
	cred := "cred-canary-" + randomToken("")
	const name = "leak-test-secret"
	t.Cleanup(func() { run(t, "", "secret", "delete", name, "--without-recovery", "--wait") })

	args := []string{"secret", "create", name, "--wait", "--description", "leak test"}
	for _, a := range args {
		if strings.Contains(a, value) {
			t.Fatalf("the command line holds the value: %q", args)
		}
	}
	created := mustRun(t, value, args...)
	if strings.Contains(created, value) {
		t.Errorf("smd secret create: stdout holds the value: %q", created)
	}
	if got := mustRun(t, "", "secret", "get", name); got != value+"\n" {
		t.Errorf("smd secret get %s = %q, want %q", name, got, value+"\n")
	}
	// A value file works too, and an update with a new value.
	file := filepath.Join(t.TempDir(), "value")
	if err := os.WriteFile(file, []byte(value+"-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "", "secret", "update", name, "--value-file", file, "--wait")
	if got := mustRun(t, "", "secret", "get", name); got != value+"-2\n" {
		t.Errorf("smd secret get %s after update = %q, want %q", name, got, value+"-2\n")
	}
	// Only get prints it: not describe, list or the tasks.
	for _, args := range [][]string{
		{"secret", "describe", name}, {"secret", "describe", name, "-o", "json"},
		{"secret", "list", "-o", "json"}, {"task", "list", "-o", "json"},
	} {
		if out := mustRun(t, "", args...); strings.Contains(out, value) {
			t.Errorf("smd %s: output holds the value:\n%s", strings.Join(args, " "), out)
		}
	}

	// A builtin credential, in a scope of its own.
	const scope = "leaktest"
	t.Cleanup(func() { run(t, "", "credential", "delete", "leak_cred", "--scope", scope) })
	mustRun(t, cred, "credential", "put", "leak_cred", "--scope", scope)
	if out := mustRun(t, "", "credential", "list", "--scope", scope, "-o", "json"); strings.Contains(out, cred) || !strings.Contains(out, "leak_cred") {
		t.Errorf("smd credential list: want the name and not the value:\n%s", out)
	}

	log := readDevLog(t)
	if !strings.Contains(log, `"op":"create"`) {
		t.Errorf(`the smd dev log has no "op":"create" line: is it the right log?`)
	}
	for what, s := range map[string]string{"secret value": value, "credential value": cred, "operator token": devVar("SMD_TOKEN")} {
		if s == "" {
			t.Fatalf("no %s to look for", what)
		}
		if strings.Contains(log, s) {
			t.Errorf("the smd dev log holds the %s", what)
		}
	}
}
