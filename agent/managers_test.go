package agent

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
)

// fakeResolver answers LookupHost from a map, counting lookups.
type fakeResolver struct {
	hosts   map[string][]string
	err     map[string]error
	lookups int
}

func (f *fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	f.lookups++
	if err := f.err[host]; err != nil {
		return nil, err
	}
	return f.hosts[host], nil
}

func TestIssue11ParseManagers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		want     []endpoint
	}{
		{"one address, as before", "smd-manager.example.internal:7070", []endpoint{{"smd-manager.example.internal", "7070"}}},
		{"several, spaces trimmed", "10.0.0.1:7070, 10.0.0.2:7070 ,smd.example:7071",
			[]endpoint{{"10.0.0.1", "7070"}, {"10.0.0.2", "7070"}, {"smd.example", "7071"}}},
		{"IPv6", "[::1]:7070,127.0.0.1:7070", []endpoint{{"::1", "7070"}, {"127.0.0.1", "7070"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseManagers(tc.in)
			if err != nil {
				t.Fatalf("parseManagers(%q) = %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(endpoint{})); diff != "" {
				t.Errorf("parseManagers(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "manager: must not be empty"},
		{"one without port", "smd.example", `manager: "smd.example" must be host:port`},
		{"one with a bad port", "smd.example:http", `manager: "smd.example:http": the port must be a number`},
		{"second without port", "a.example:7070,b.example", `manager[1]: "b.example" must be host:port`},
		{"empty item", "a.example:7070,,b.example:7070", "manager[1]: must not be empty"},
		{"trailing comma", "a.example:7070,", "manager[1]: must not be empty"},
		{"no host", "a.example:7070,:7070", `manager[1]: ":7070" has no host`},
		{"port out of range", "a.example:7070,b.example:70700", "manager[1]: \"b.example:70700\": the port must be a number from 1 to 65535"},
		{"repeated", "a.example:7070,b.example:7070, a.example:7070", "manager[2]: a.example:7070 repeats manager[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseManagers(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parseManagers(%q) = %v, want an error containing %q", tc.in, err, tc.want)
			}
		})
	}
}

// TestIssue11ManagerKeyYAML: the manager key takes a string (one address
// or several separated by commas) or a list; a list item that is not one
// address is refused with its line and index, and strictness holds for
// the other keys.
func TestIssue11ManagerKeyYAML(t *testing.T) {
	t.Parallel()
	decode := func(doc string) (Config, error) {
		c := DefaultConfig()
		dec := yaml.NewDecoder(strings.NewReader(doc))
		dec.KnownFields(true)
		err := dec.Decode(&c)
		return c, err
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"string", "manager: a.example:7070\nname: n\n", "a.example:7070"},
		{"commas", "manager: a.example:7070,b.example:7070\n", "a.example:7070,b.example:7070"},
		{"list", "name: n\nmanager:\n  - a.example:7070\n  - 10.0.0.2:7070\n", "a.example:7070,10.0.0.2:7070"},
		{"flow list", "manager: [a.example:7070, b.example:7070]\n", "a.example:7070,b.example:7070"},
		{"absent: the default", "name: n\n", "127.0.0.1:7070"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := decode(tc.doc)
			if err != nil {
				t.Fatalf("decode(%q) = %v", tc.doc, err)
			}
			if c.Manager != tc.want {
				t.Errorf("decode(%q).Manager = %q, want %q", tc.doc, c.Manager, tc.want)
			}
			if strings.Contains(tc.doc, "name: n") && c.Name != "n" {
				t.Errorf("decode(%q).Name = %q, want n (the other keys decode too)", tc.doc, c.Name)
			}
		})
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"item with commas", "manager:\n  - a.example:7070\n  - b.example:7070,c.example:7070\n", "line 3: manager[1]: must be one host:port address"},
		{"nested list", "manager:\n  - [a.example:7070]\n", "line 2: manager[0]: must be one host:port address"},
		{"mapping", "manager:\n  host: a\n", "manager: must be a host:port address or a list of them"},
		{"unknown key beside a list", "manager: [a.example:7070]\nmanagr: x\n", "line 2: field managr not found"},
		{"unknown nested key", "manager: [a.example:7070]\ntls:\n  insecur: true\n", "line 3: field insecur not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decode(tc.doc); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("decode(%q) = %v, want an error containing %q", tc.doc, err, tc.want)
			}
		})
	}
}

// addrs is the addresses of n attempts, with their TLS server names.
func attempts(r *rotation, n int) []string {
	var out []string
	for range n {
		t := r.Next(context.Background())
		s := t.addr + " " + t.serverName
		if t.err != nil {
			s += " error: " + t.err.Error()
		}
		out = append(out, s)
	}
	return out
}

// TestIssue11RotationOrder: a round holds every address (a name expanded
// into its addresses, each with the name as TLS server name), starts at
// the random offset and walks on in order; the next round resolves the
// names again and starts at the same offset.
func TestIssue11RotationOrder(t *testing.T) {
	t.Parallel()
	eps, err := parseManagers("10.0.0.1:7070,smd.example:7071,10.0.0.3:7070")
	if err != nil {
		t.Fatal(err)
	}
	res := &fakeResolver{hosts: map[string][]string{"smd.example": {"10.0.1.1", "fd00::2"}}}
	r := newRotation(eps, res, func(int) int { return 7 }) // 7 mod 4 = 3
	got := attempts(r, 6)
	want := []string{
		"10.0.0.3:7070 10.0.0.3", // the offset
		"10.0.0.1:7070 10.0.0.1",
		"10.0.1.1:7071 smd.example",
		"[fd00::2]:7071 smd.example", // round 1 done: every address once
		"10.0.0.3:7070 10.0.0.3",     // round 2, from the same offset
		"10.0.0.1:7070 10.0.0.1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("attempts (-want +got):\n%s", diff)
	}
	if res.lookups != 2 {
		t.Errorf("lookups = %d, want 2 (one per round)", res.lookups)
	}
}

// TestIssue11RotationFollowsDNS: a name's addresses are looked up again
// every round, so a replaced replica's new address is tried; a name that
// does not resolve is an attempt that fails with the lookup's error, and
// the rotation moves on to the other addresses.
func TestIssue11RotationFollowsDNS(t *testing.T) {
	t.Parallel()
	eps, err := parseManagers("smd.example:7070,10.0.0.9:7070")
	if err != nil {
		t.Fatal(err)
	}
	res := &fakeResolver{hosts: map[string][]string{"smd.example": {"10.0.0.1", "10.0.0.2"}}}
	r := newRotation(eps, res, func(int) int { return 0 })
	if diff := cmp.Diff([]string{"10.0.0.1:7070 smd.example", "10.0.0.2:7070 smd.example", "10.0.0.9:7070 10.0.0.9"}, attempts(r, 3)); diff != "" {
		t.Errorf("round 1 (-want +got):\n%s", diff)
	}
	res.hosts["smd.example"] = []string{"10.0.0.5"}
	if diff := cmp.Diff([]string{"10.0.0.5:7070 smd.example", "10.0.0.9:7070 10.0.0.9"}, attempts(r, 2)); diff != "" {
		t.Errorf("round 2, after the name changed (-want +got):\n%s", diff)
	}
	res.err = map[string]error{"smd.example": errors.New("no such host")}
	if diff := cmp.Diff([]string{"smd.example:7070 smd.example error: resolve smd.example: no such host", "10.0.0.9:7070 10.0.0.9"}, attempts(r, 2)); diff != "" {
		t.Errorf("round 3, the name does not resolve (-want +got):\n%s", diff)
	}
	res.err, res.hosts["smd.example"] = nil, nil
	if got := attempts(r, 1); !strings.Contains(got[0], "error: resolve smd.example: smd.example has no address") {
		t.Errorf("round 4, no address: %v, want the attempt to fail saying so", got)
	}
}

// TestIssue11RotationSpreads: agents start at their own random offset,
// so a fleet does not pile onto the first address listed; one agent
// tries every address before any twice, whatever its offset.
func TestIssue11RotationSpreads(t *testing.T) {
	t.Parallel()
	eps, err := parseManagers("10.0.0.1:7070,10.0.0.2:7070,10.0.0.3:7070")
	if err != nil {
		t.Fatal(err)
	}
	firsts := map[string]bool{}
	for off := range 3 {
		r := newRotation(eps, &fakeResolver{}, func(int) int { return off })
		got := attempts(r, 3)
		firsts[got[0]] = true
		seen := map[string]bool{}
		for _, a := range got {
			seen[a] = true
		}
		if len(seen) != 3 {
			t.Errorf("offset %d: attempts %v, want each of the 3 addresses once", off, got)
		}
	}
	if len(firsts) != 3 {
		t.Errorf("first addresses over the offsets = %v, want all 3", firsts)
	}
}
