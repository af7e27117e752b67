// Package readme runs the README's walkthrough verbatim against smd dev
// and checks that every command prints what the README says it prints.
//
// The walkthrough is the README section whose heading starts with
// "### Walkthrough". A walkthrough block is a fenced ```console block: lines starting with
// "$ " are commands (a heredoc's lines up to its terminator belong to the
// command), the other lines are the expected output. In expected output,
// runs of spaces match any run of spaces, and <UPPER_CASE> placeholders
// match any text (ids, versions, times, host names).
package readme

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// step is one command of the walkthrough and its expected output.
type step struct {
	line int
	cmd  string
	want []string
}

var heredoc = regexp.MustCompile(`(?:^|[^<])<<-?\s*['"]?([A-Za-z_]+)['"]?`)

func parseWalkthrough(t *testing.T, path string) []step {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var steps []step
	in, section := false, false
	sc := bufio.NewScanner(bytes.NewReader(b))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "### Walkthrough"):
			section = true
		case strings.HasPrefix(line, "## ") || (strings.HasPrefix(line, "### ") && !in):
			section = false
		case !section:
		case !in && strings.TrimSpace(line) == "```console":
			in = true
		case in && strings.TrimSpace(line) == "```":
			in = false
		case in && strings.HasPrefix(line, "$ "):
			s := step{line: n, cmd: strings.TrimPrefix(line, "$ ")}
			if m := heredoc.FindStringSubmatch(s.cmd); m != nil {
				for sc.Scan() {
					n++
					s.cmd += "\n" + sc.Text()
					if sc.Text() == m[1] {
						break
					}
				}
			}
			steps = append(steps, s)
		case in:
			if len(steps) == 0 {
				t.Fatalf("README.md:%d: output before the first command", n)
			}
			steps[len(steps)-1].want = append(steps[len(steps)-1].want, line)
		}
	}
	return steps
}

var placeholder = regexp.MustCompile(`<[A-Z][A-Z_]*>`)

// lineMatcher turns an expected line into a regexp.
func lineMatcher(want string) *regexp.Regexp {
	want = strings.Join(strings.Fields(want), " ")
	parts := placeholder.Split(want, -1)
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(regexp.QuoteMeta(p), " ", `\s+`)
	}
	return regexp.MustCompile(`^` + strings.Join(parts, `.+?`) + `$`)
}

func TestREADMEWalkthrough(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	steps := parseWalkthrough(t, filepath.Join(root, "README.md"))
	if len(steps) < 10 {
		t.Fatalf("found %d walkthrough commands in README.md, want the whole walkthrough", len(steps))
	}

	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "smd"), "./cmd/smd")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	work := t.TempDir()
	envFile := filepath.Join(work, "dev.env")
	ctx, cancel := context.WithCancel(context.Background())
	dev := exec.CommandContext(ctx, filepath.Join(bin, "smd"), "dev", "--env-file", envFile,
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--aws-listen", "127.0.0.1:0")
	var devLog bytes.Buffer
	dev.Stdout, dev.Stderr = &devLog, &devLog
	dev.Env = append(os.Environ(), "HOME="+work)
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dev.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { dev.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cancel()
		}
		if t.Failed() {
			t.Logf("smd dev output:\n%s", devLog.String())
		}
	})
	var env []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(envFile); err == nil {
			env = strings.Fields(string(b))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("smd dev did not write %s within 30s", envFile)
		}
		time.Sleep(50 * time.Millisecond)
	}

	for _, s := range steps {
		cmd := exec.Command("bash", "-c", s.cmd)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), env...)
		cmd.Env = append(cmd.Env, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "HOME="+work)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Errorf("README.md:%d: %s\nfailed: %v\nstdout:\n%s\nstderr:\n%s", s.line, s.cmd, err, stdout.String(), stderr.String())
			continue
		}
		got := strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n")
		if stdout.Len() == 0 {
			got = nil
		}
		if len(got) != len(s.want) {
			t.Errorf("README.md:%d: %s\nprinted %d lines, README shows %d:\n%s", s.line, s.cmd, len(got), len(s.want), stdout.String())
			continue
		}
		for i, w := range s.want {
			if g := strings.Join(strings.Fields(got[i]), " "); !lineMatcher(w).MatchString(g) {
				t.Errorf("README.md:%d: %s\noutput line %d = %q\nREADME shows     %q", s.line, s.cmd, i+1, got[i], w)
			}
		}
	}
}
