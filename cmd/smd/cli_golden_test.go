package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// TestJSONOutputGolden compares -o json of the commands scripts rely on
// with testdata/NAME.golden after normalizeJSON (go test -run
// TestJSONOutputGolden -update rewrites them). Each command runs twice and
// must give the same normalized output, and the raw output must already be
// in the canonical layout (two-space indent, one space after a colon), so
// that scripts can compare it byte for byte across smd builds.
//
// It is the one sequential test: it reads state the parallel tests must not
// disturb while it runs (the delegate's tags and running tasks).
func TestJSONOutputGolden(t *testing.T) {
	needDev(t)
	const (
		name  = "golden-secret"
		value = "golden value"
		tag   = "golden_tag"
	)
	// Leftovers of an interrupted run.
	run(t, "", "secret", "delete", name, "--without-recovery", "--wait")
	run(t, "", "delegate", "tag", "dev", "--remove", tag)
	t.Cleanup(func() {
		run(t, "", "secret", "delete", name, "--without-recovery", "--wait")
		run(t, "", "delegate", "tag", "dev", "--remove", tag)
	})

	golden := func(file string, args ...string) string {
		t.Helper()
		got := goldenOutput(t, "", args...)
		if again := goldenOutput(t, "", args...); again != got {
			t.Errorf("smd %s is not stable between two runs (-first +second):\n%s", strings.Join(args, " "), cmp.Diff(got, again))
		}
		checkGolden(t, file, got)
		return got
	}

	golden("connector_get", "connector", "get", "dev_aws", "-o", "json")
	golden("connector_list", "connector", "list", "-o", "json")
	golden("delegate_list", "delegate", "list", "-o", "json")
	golden("credential_list", "credential", "list", "-o", "json")

	// A create cannot run twice: create, delete, create again.
	createArgs := []string{"secret", "create", name, "--description", "made by TestJSONOutputGolden", "--tag", "team=cli", "--wait", "-o", "json"}
	created := goldenOutput(t, value, createArgs...)
	mustRun(t, "", "secret", "delete", name, "--without-recovery", "--wait")
	raw := mustRun(t, value, createArgs...)
	if again := normalizeOrFatal(t, raw); again != created {
		t.Errorf("smd secret create is not stable between two runs (-first +second):\n%s", cmp.Diff(created, again))
	}
	checkGolden(t, "secret_create", created)
	var task struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(raw), &task); err != nil || task.ID == "" {
		t.Fatalf("smd secret create -o json: no task id (%v):\n%s", err, raw)
	}

	golden("secret_get", "secret", "get", name, "-o", "json")
	golden("secret_describe", "secret", "describe", name, "-o", "json")
	golden("task_get", "task", "get", task.ID, "-o", "json")
	golden("delegate_tag", "delegate", "tag", "dev", "--add", tag, "-o", "json")
}

// goldenOutput runs smd with -o json, checks it exits 0 with nothing on
// stderr and prints canonical JSON, and returns it normalized.
func goldenOutput(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := run(t, stdin, args...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("smd %s: %v", strings.Join(args, " "), r)
	}
	var canon bytes.Buffer
	if err := json.Indent(&canon, []byte(strings.TrimSpace(r.stdout)), "", "  "); err != nil {
		t.Fatalf("smd %s: not JSON: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
	if want := canon.String() + "\n"; r.stdout != want {
		t.Errorf("smd %s: output is not in the canonical layout (-want +got):\n%s", strings.Join(args, " "), cmp.Diff(want, r.stdout))
	}
	return normalizeOrFatal(t, r.stdout)
}

func normalizeOrFatal(t *testing.T, out string) string {
	t.Helper()
	host, _ := os.Hostname()
	n, err := normalizeJSON([]byte(out), host)
	if err != nil {
		t.Fatalf("normalize: %v\n%s", err, out)
	}
	return string(n)
}

// checkGolden compares got with testdata/NAME.golden, or writes it there
// with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run TestJSONOutputGolden -update writes it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got; -update rewrites it):\n%s", path, diff)
	}
}

// Placeholders normalizeJSON puts in place of what changes between runs
// and machines.
const (
	phID       = "<ID>"
	phTime     = "<TIME>"
	phVersion  = "<VERSION>"
	phHost     = "<HOSTNAME>"
	phDuration = "<DURATION>"
)

var (
	// rfc3339RE is a protojson Timestamp.
	rfc3339RE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$`)
	// durationRE is a protojson Duration.
	durationRE = regexp.MustCompile(`^-?\d+(\.\d+)?s$`)
	// arnSuffixRE is the random "-AbC123" AWS appends to a secret's name
	// in its ARN.
	arnSuffixRE = regexp.MustCompile(`^(arn:aws[a-z-]*:secretsmanager:[^:]*:\d{12}:secret:.+)-[A-Za-z0-9]{6}$`)
	// portRE is a loopback address with its (random) port.
	portRE = regexp.MustCompile(`(127\.0\.0\.1|localhost|\[::1\]):\d+`)
)

// normalizeJSON returns the JSON document b with what varies between
// runs, hosts and builds replaced by placeholders, so that a golden file
// holds only what the CLI decides: the fields, their order, names and
// values. It keeps the field order of b and writes it indented by two
// spaces. Replaced are:
//
//   - the values of "id", "delegate_id", "task_id" and "request_id", and
//     the elements of "running_tasks": <ID> (random per task, per
//     connection and per invocation);
//   - every protojson Timestamp (RFC 3339, UTC): <TIME>;
//   - every protojson Duration ("1.5s"): <DURATION>;
//   - "version_id" values and the keys of a "version_stages" object (AWS
//     version ids): <VERSION>;
//   - the random six characters AWS appends to a secret's ARN: -<SUFFIX>;
//   - the port of a 127.0.0.1, localhost or [::1] address (smd dev listens
//     on :0): 127.0.0.1:<PORT>;
//   - "hostname" values, and host (lower-cased) where it is an element of a
//     "tags" list (the delegate's implicit hostname tag): <HOSTNAME>; such
//     a list is sorted again, so the golden file does not depend on where
//     the host name sorts among the other tags.
//
// Nothing else is touched: a new, renamed or reordered field is a diff.
func normalizeJSON(b []byte, host string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	n, err := parseNode(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("more than one JSON value")
	}
	n.normalize("", strings.ToLower(host))
	var out bytes.Buffer
	if err := n.write(&out, ""); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// jsonNode is a JSON value that keeps the order of an object's fields.
type jsonNode struct {
	kind   json.Delim // '{', '[' or 0 for a scalar
	keys   []string   // an object's keys, in order
	elems  []*jsonNode
	scalar any // string, json.Number, bool or nil
}

func parseNode(dec *json.Decoder) (*jsonNode, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return &jsonNode{scalar: tok}, nil
	}
	n := &jsonNode{kind: d}
	for dec.More() {
		if d == '{' {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			n.keys = append(n.keys, k.(string))
		}
		e, err := parseNode(dec)
		if err != nil {
			return nil, err
		}
		n.elems = append(n.elems, e)
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return nil, err
	}
	return n, nil
}

// normalize applies normalizeJSON's rules to n, the value of field key.
func (n *jsonNode) normalize(key, host string) {
	switch n.kind {
	case '{':
		for i, k := range n.keys {
			if key == "version_stages" {
				n.keys[i] = phVersion
			}
			n.elems[i].normalize(k, host)
		}
	case '[':
		hostTag := false
		for _, e := range n.elems {
			if s, ok := e.scalar.(string); ok && key == "tags" && host != "" && s == host {
				e.scalar, hostTag = phHost, true
				continue
			}
			if key == "running_tasks" {
				e.scalar = phID
				continue
			}
			e.normalize("", host)
		}
		if hostTag {
			slices.SortFunc(n.elems, func(a, b *jsonNode) int {
				return strings.Compare(fmt.Sprint(a.scalar), fmt.Sprint(b.scalar))
			})
		}
	default:
		s, ok := n.scalar.(string)
		if !ok {
			return
		}
		switch {
		case key == "id" || key == "delegate_id" || key == "task_id" || key == "request_id":
			s = phID
		case key == "version_id":
			s = phVersion
		case key == "hostname":
			s = phHost
		case rfc3339RE.MatchString(s):
			s = phTime
		case durationRE.MatchString(s):
			s = phDuration
		}
		s = arnSuffixRE.ReplaceAllString(s, "$1-<SUFFIX>")
		s = portRE.ReplaceAllString(s, "$1:<PORT>")
		n.scalar = s
	}
}

// write writes n indented by two spaces per level, without escaping < and >.
func (n *jsonNode) write(w *bytes.Buffer, indent string) error {
	if n.kind == 0 {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(n.scalar); err != nil {
			return err
		}
		w.Write(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
		return nil
	}
	open, end := "{", "}"
	if n.kind == '[' {
		open, end = "[", "]"
	}
	w.WriteString(open)
	if len(n.elems) == 0 {
		w.WriteString(end)
		return nil
	}
	inner := indent + "  "
	for i, e := range n.elems {
		if i > 0 {
			w.WriteByte(',')
		}
		w.WriteString("\n" + inner)
		if n.kind == '{' {
			k := &jsonNode{scalar: n.keys[i]}
			if err := k.write(w, inner); err != nil {
				return err
			}
			w.WriteString(": ")
		}
		if err := e.write(w, inner); err != nil {
			return err
		}
	}
	w.WriteString("\n" + indent + end)
	return nil
}

func TestNormalizeJSON(t *testing.T) {
	t.Parallel()
	in := `{"id": "01abc", "name": "x", "created_at": "2026-01-02T03:04:05.123456Z", "tags": ["zz", "dev", "myhost"],
	 "hostname": "MyHost", "arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:dev/x-AbC123",
	 "version_stages": {"f00": {"stages": ["AWSCURRENT"]}}, "version_id": "f00", "endpoint_url": "http://127.0.0.1:4566",
	 "sleep": "1.5s", "n": 10, "ok": true, "none": null, "empty": {}, "list": [], "running_tasks": ["t1"],
	 "labels": {"tags": "myhost"}}`
	want := `{
  "id": "<ID>",
  "name": "x",
  "created_at": "<TIME>",
  "tags": [
    "<HOSTNAME>",
    "dev",
    "zz"
  ],
  "hostname": "<HOSTNAME>",
  "arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:dev/x-<SUFFIX>",
  "version_stages": {
    "<VERSION>": {
      "stages": [
        "AWSCURRENT"
      ]
    }
  },
  "version_id": "<VERSION>",
  "endpoint_url": "http://127.0.0.1:<PORT>",
  "sleep": "<DURATION>",
  "n": 10,
  "ok": true,
  "none": null,
  "empty": {},
  "list": [],
  "running_tasks": [
    "<ID>"
  ],
  "labels": {
    "tags": "myhost"
  }
}
`
	got, err := normalizeJSON([]byte(in), "MyHost")
	if err != nil {
		t.Fatalf("normalizeJSON: %v", err)
	}
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("normalizeJSON (-want +got):\n%s", diff)
	}
	if _, err := normalizeJSON([]byte(`{"a": 1} {}`), ""); err == nil {
		t.Errorf("normalizeJSON(two values) = nil error, want one")
	}
}
