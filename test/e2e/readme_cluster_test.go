package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/manager/store/postgres/pgtest"
)

// The README's "Try it on one machine" (under "## Running several
// managers") is run verbatim by TestIssue11READMETryItOnOneMachine. Its
// shape, which the parser holds it to:
//
//   - ```yaml blocks whose first line is "# FILE": written to FILE in the
//     scratch directory when the run reaches them;
//   - ```console blocks: "$ " lines are commands, run by `sh -c` one at a
//     time; the other lines are what the command before them prints. In
//     expected output, runs of spaces match any run of spaces, a
//     <PLACEHOLDER> matches one word, and a placeholder whose name ends
//     in _DIGIT (<REPLICA_1>) must be the same word wherever it appears.
//     Lines may come in any order (replicas started together list in
//     the order they joined);
//   - a command ending in " &" is a background process of the test;
//     "kill %N ..." sends SIGTERM to the Nth of them (as the shell's job
//     control does) and waits for it to exit 0; "export A=... B=..." sets
//     those variables for the commands after it.
//
// Any other fenced block in the subsection fails the test, so every
// command there is run.
const tryItHeading = "### Try it on one machine"

// readmeStep is one yaml block or one command of the subsection.
type readmeStep struct {
	line int
	file string // a yaml block: its file name; else ""
	text string // the yaml, or the command
	want []string
}

func parseTryIt(t *testing.T, path string) []readmeStep {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var steps []readmeStep
	var in string // the open fence's info string
	var yaml *readmeStep
	parent, section, found := false, false, false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		fence := strings.HasPrefix(strings.TrimSpace(line), "```")
		switch {
		case in == "" && strings.HasPrefix(line, "## "):
			parent, section = line == "## Running several managers", false
		case in == "" && strings.HasPrefix(line, "### "):
			section = parent && line == tryItHeading
			found = found || section
		case !section:
		case in == "" && fence:
			in = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "```"))
			switch in {
			case "yaml":
				yaml = &readmeStep{line: n + 1}
			case "console":
			default:
				t.Fatalf("README.md:%d: a %q block in %q: only yaml and console blocks are run, so this one would not be", n, in, tryItHeading)
			}
		case fence:
			if yaml != nil {
				steps = append(steps, *yaml)
				yaml = nil
			}
			in = ""
		case in == "":
			// prose
		case yaml != nil && yaml.file == "":
			name := strings.TrimPrefix(line, "# ")
			if name == line || name == "" || strings.ContainsAny(name, "/ ") {
				t.Fatalf("README.md:%d: a yaml block of %q must start with \"# FILE\" naming the file it is, got %q", n, tryItHeading, line)
			}
			yaml.file, yaml.text = name, line+"\n"
		case yaml != nil:
			yaml.text += line + "\n"
		case strings.HasPrefix(line, "$ "):
			steps = append(steps, readmeStep{line: n, text: strings.TrimPrefix(line, "$ ")})
		default:
			if len(steps) == 0 || steps[len(steps)-1].file != "" {
				t.Fatalf("README.md:%d: output before the first command of a console block", n)
			}
			steps[len(steps)-1].want = append(steps[len(steps)-1].want, line)
		}
	}
	if !found {
		t.Fatalf("README.md has no %q under \"## Running several managers\"", tryItHeading)
	}
	if in != "" {
		t.Fatalf("README.md: a block of %q is not closed", tryItHeading)
	}
	return steps
}

// checkTryItShape fails unless the subsection still does what the README
// says it does, so that a section cut down to nothing cannot pass.
func checkTryItShape(t *testing.T, steps []readmeStep) {
	t.Helper()
	count := func(re string) int {
		n, r := 0, regexp.MustCompile(re)
		for _, s := range steps {
			if s.file == "" && r.MatchString(s.text) {
				n++
			}
		}
		return n
	}
	for _, c := range []struct {
		re   string
		min  int
		what string
	}{
		{`^smd manager -c \S+ .*&$`, 3, "three replicas started in the background"},
		{`^smd agent -c \S+ .*&$`, 1, "an agent started in the background"},
		{`^smd master-key generate`, 1, "the master key"},
		{`^smd token generate --kind operator`, 1, "an operator token"},
		{`^smd token generate --kind delegate`, 1, "a delegate token"},
		{`/dev/urandom`, 1, "the peer token"},
		{`^smd cluster list`, 2, "smd cluster list"},
		{`^smd delegate list`, 2, "smd delegate list"},
		{`^smd delegate ping`, 2, "pings"},
		{`--async`, 1, "an async task"},
		{`^kill %1$`, 1, "a replica stopped"},
	} {
		if got := count(c.re); got < c.min {
			t.Fatalf("%q has %d commands matching %s (%s), want at least %d: the section changed shape; update this test with it", tryItHeading, got, c.re, c.what, c.min)
		}
	}
	files := map[string]bool{}
	for _, s := range steps {
		files[s.file] = true
	}
	if !files["replica.yaml"] || !files["agent.yaml"] {
		t.Fatalf("%q shows no replica.yaml or agent.yaml block", tryItHeading)
	}
}

var loopbackPort = regexp.MustCompile(`127\.0\.0\.1:(\d{2,5})\b`)

// rewritePorts gives every fixed loopback address of the steps a free
// port of this machine, the same one wherever it appears.
func rewritePorts(t *testing.T, steps []readmeStep) {
	t.Helper()
	ports := map[string]string{}
	sub := func(s string) string {
		return loopbackPort.ReplaceAllStringFunc(s, func(a string) string {
			if ports[a] == "" {
				ports[a] = freeAddr(t)
			}
			return ports[a]
		})
	}
	for i := range steps {
		steps[i].text = sub(steps[i].text)
		for j := range steps[i].want {
			steps[i].want[j] = sub(steps[i].want[j])
		}
	}
	if len(ports) < 6 {
		t.Fatalf("%q names %d loopback addresses, want the three replicas' gRPC and HTTP ones", tryItHeading, len(ports))
	}
}

var placeholder = regexp.MustCompile(`<([A-Z][A-Z0-9_]*)>`)

// expectLine is an expected output line as a regexp, with the names of
// its placeholders in the order of its groups.
type expectLine struct {
	re    *regexp.Regexp
	names []string
}

func compileExpect(want string) expectLine {
	want = strings.Join(strings.Fields(want), " ")
	var e expectLine
	var b strings.Builder
	b.WriteString("^")
	last := 0
	for _, m := range placeholder.FindAllStringSubmatchIndex(want, -1) {
		b.WriteString(strings.ReplaceAll(regexp.QuoteMeta(want[last:m[0]]), " ", `\s+`))
		b.WriteString(`(\S+)`)
		e.names = append(e.names, want[m[2]:m[3]])
		last = m[1]
	}
	b.WriteString(strings.ReplaceAll(regexp.QuoteMeta(want[last:]), " ", `\s+`) + "$")
	e.re = regexp.MustCompile(b.String())
	return e
}

var boundName = regexp.MustCompile(`_\d$`)

// matchOutput matches got against want in any order of lines; bound
// placeholders must agree with vars, which it extends on success.
func matchOutput(want []string, got []string, vars map[string]string) bool {
	if len(want) != len(got) {
		return false
	}
	exp := make([]expectLine, len(want))
	for i, w := range want {
		exp[i] = compileExpect(w)
	}
	used := make([]bool, len(got))
	var try func(i int, vars map[string]string) map[string]string
	try = func(i int, vars map[string]string) map[string]string {
		if i == len(exp) {
			return vars
		}
		for j, g := range got {
			if used[j] {
				continue
			}
			m := exp[i].re.FindStringSubmatch(strings.Join(strings.Fields(g), " "))
			if m == nil {
				continue
			}
			next, ok := map[string]string{}, true
			for k, v := range vars {
				next[k] = v
			}
			for k, name := range exp[i].names {
				if !boundName.MatchString(name) {
					continue
				}
				if v, seen := next[name]; seen && v != m[k+1] {
					ok = false
				}
				next[name] = m[k+1]
			}
			if !ok {
				continue
			}
			used[j] = true
			if r := try(i+1, next); r != nil {
				return r
			}
			used[j] = false
		}
		return nil
	}
	r := try(0, vars)
	if r == nil {
		return false
	}
	for k, v := range r {
		vars[k] = v
	}
	return true
}

// TestIssue11READMETryItOnOneMachine runs the README's three-replica
// cluster on a fresh PostgreSQL database, command by command, and checks
// that each prints what the README shows: the agent on replica 1, three
// replicas listed, smd_cluster_replicas 3, a ping and an async ping
// through other replicas, and after replica 1's SIGTERM two replicas
// listed, the agent connected to another one and a ping through it.
func TestIssue11READMETryItOnOneMachine(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("the README's section runs curl, which this machine lacks")
	}
	steps := parseTryIt(t, filepath.Join("..", "..", "README.md"))
	checkTryItShape(t, steps)
	rewritePorts(t, steps)
	dsn, _ := pgtest.Database(t)
	work := t.TempDir()
	env := append(cleanEnv(), "PATH="+filepath.Dir(smdBin)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+work, "SMD_STORE_DSN="+dsn)

	var jobs []*readmeJob
	t.Cleanup(func() {
		for _, j := range jobs {
			j.stop(20 * time.Second)
		}
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(work, "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("%s:\n%s", filepath.Base(l), tail(string(b), 30))
			}
		}
	})
	vars := map[string]string{}
	killJob := regexp.MustCompile(`^kill( %\d+)+$`)
	exportCmd := regexp.MustCompile(`^export [A-Z_][A-Z0-9_]*=`)
	exportName := regexp.MustCompile(`(?:^export | )([A-Z_][A-Z0-9_]*)=`)

	for _, s := range steps {
		where := fmt.Sprintf("README.md:%d: %s", s.line, s.text)
		switch {
		case s.file != "":
			if err := os.WriteFile(filepath.Join(work, s.file), []byte(s.text), 0o600); err != nil {
				t.Fatal(err)
			}
		case strings.HasSuffix(s.text, " &"):
			j, err := startJob(work, env, strings.TrimSuffix(s.text, " &"))
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			jobs = append(jobs, j)
		case killJob.MatchString(s.text):
			for _, f := range strings.Fields(s.text)[1:] {
				n, _ := strconv.Atoi(strings.TrimPrefix(f, "%"))
				if n < 1 || n > len(jobs) {
					t.Fatalf("%s: there is no job %d (%d started)", where, n, len(jobs))
				}
				j := jobs[n-1]
				if !j.stop(60 * time.Second) {
					t.Fatalf("%s: job %d (%s) did not stop within 60s of SIGTERM", where, n, j.cmd)
				}
				if j.err != nil {
					t.Fatalf("%s: job %d (%s) ended %v after SIGTERM, want exit 0", where, n, j.cmd, j.err)
				}
			}
		case exportCmd.MatchString(s.text):
			out, errOut, err := runSh(work, env, s.text+" && env -0")
			if err != nil {
				t.Fatalf("%s: %v\n%s", where, err, errOut)
			}
			names := map[string]bool{}
			for _, m := range exportName.FindAllStringSubmatch(s.text, -1) {
				names[m[1]] = true
			}
			for _, kv := range strings.Split(out, "\x00") {
				if name, _, _ := strings.Cut(kv, "="); names[name] {
					env = append(env, kv)
				}
			}
		case len(s.want) == 0:
			out, errOut, err := runSh(work, env, s.text)
			if err != nil || out != "" {
				t.Fatalf("%s: %v, printed %q (the README shows nothing)\nstderr: %s", where, err, out, errOut)
			}
		default:
			// What the README shows may take a moment (an agent
			// connecting, a replica joining): run it again until it does.
			var out, errOut string
			var err error
			ok := false
			for deadline := time.Now().Add(60 * time.Second); !ok && time.Now().Before(deadline); {
				out, errOut, err = runSh(work, env, s.text)
				got := strings.Split(strings.TrimRight(out, "\n"), "\n")
				if ok = err == nil && matchOutput(s.want, got, vars); !ok {
					time.Sleep(250 * time.Millisecond)
				}
			}
			if !ok {
				t.Fatalf("%s\nnever printed what the README shows within 60s; last: %v\nstdout:\n%s\nstderr:\n%s\nREADME shows:\n%s\nbound so far: %v",
					where, err, out, errOut, strings.Join(s.want, "\n"), vars)
			}
		}
	}
	for i, j := range jobs {
		select {
		case <-j.done:
		default:
			t.Errorf("job %d (%s) still runs after the section: it should stop what it started", i+1, j.cmd)
		}
	}
	checkAgentSwitched(t, filepath.Join(work, "agent.log"))
}

// checkAgentSwitched holds agent.log to what the README says it shows:
// once connected, the lost stream, then "connected to manager" at
// another address.
func checkAgentSwitched(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("agent.log: %v", err)
	}
	var first, lost, switched string
	for _, line := range strings.Split(string(b), "\n") {
		var e struct{ Message, Address string }
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		switch {
		case e.Message == "connected to manager" && first == "":
			first = e.Address
		case e.Message == "stream to manager lost; reconnecting" && first != "" && lost == "":
			lost = e.Address
		case e.Message == "connected to manager" && lost != "" && switched == "":
			switched = e.Address
		}
	}
	if first == "" || lost != first || switched == "" || switched == first {
		t.Errorf("agent.log: connected to %q, lost %q, connected again to %q; want a stream lost at the first address, then a connection to another:\n%s",
			first, lost, switched, tail(string(b), 20))
	}
}

// readmeJob is a background command of the section.
type readmeJob struct {
	cmd  string
	proc *exec.Cmd
	done chan struct{} // closed once it has exited; err is then set
	err  error
}

// startJob runs cmd as `sh -c "exec CMD"`, so that a signal reaches
// the command itself.
func startJob(dir string, env []string, cmd string) (*readmeJob, error) {
	j := &readmeJob{cmd: cmd, proc: exec.Command("sh", "-c", "exec "+cmd), done: make(chan struct{})}
	j.proc.Dir, j.proc.Env = dir, append([]string(nil), env...)
	if err := j.proc.Start(); err != nil {
		return nil, err
	}
	go func() { j.err = j.proc.Wait(); close(j.done) }()
	return j, nil
}

// stop sends SIGTERM unless the job has exited, and waits up to
// timeout; then it kills it and reports false.
func (j *readmeJob) stop(timeout time.Duration) bool {
	select {
	case <-j.done:
		return true
	default:
	}
	_ = j.proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.done:
		return true
	case <-time.After(timeout):
		_ = j.proc.Process.Kill()
		<-j.done
		return false
	}
}

func runSh(dir string, env []string, cmd string) (stdout, stderr string, err error) {
	c := exec.Command("sh", "-c", cmd)
	c.Dir, c.Env = dir, env
	var o, e bytes.Buffer
	c.Stdout, c.Stderr = &o, &e
	err = c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = fmt.Errorf("exit %d", ee.ExitCode())
	}
	return o.String(), e.String(), err
}
