package tasks

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/rs/zerolog"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// nested returns depth objects nested under key, innermost {"leaf":1}.
func nested(key string, depth int) string {
	return strings.Repeat(`{"`+key+`":`, depth) + `{"leaf":1}` + strings.Repeat("}", depth)
}

// noCallSM is a Secrets Manager that fails the test when called.
type noCallSM struct {
	SecretsManagerAPI
	t *testing.T
}

func (s noCallSM) GetSecretValue(context.Context, *secretsmanager.GetSecretValueInput, ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	s.t.Error("GetSecretValue was called for a reference beyond the limits")
	return nil, fmt.Errorf("not expected")
}

// TestItem9ReferenceLimits performs the attack: an 18 KB
// reference of 9,000 parts against a 9,000-deep JSON secret. It is refused
// before AWS is called and before any walk, quoting at most a short
// prefix; references at the limits are accepted.
func TestItem9ReferenceLimits(t *testing.T) {
	t.Parallel()
	long := strings.TrimSuffix(strings.Repeat("a.", 9000), ".") // 17,999 bytes, 9,000 parts
	doc := nested("a", 9000)

	_, w, err := extractJSON([]byte(doc), long)
	if err == nil || err.Code != delegatev1.Code_INVALID_ARGUMENT || w != nil {
		t.Fatalf("extractJSON(18 KB reference) = %v (walked: %v), want INVALID_ARGUMENT before any walk", err, w != nil)
	}
	if want := "is 17999 bytes; at most 1024 are allowed"; !strings.Contains(err.Msg, want) {
		t.Errorf("error %q, want it to say %q", err.Msg, want)
	}
	if strings.Contains(err.Msg, strings.Repeat("a.", maxQuotedRef/2+1)) || len(err.Msg) > 200 {
		t.Errorf("error quotes more than %d bytes of the reference (%d bytes): %q", maxQuotedRef, len(err.Msg), err.Msg)
	}

	// Through the runner: refused before the client is even asked for.
	r := NewRunner(RunnerOptions{Logger: zerolog.Nop(), Clients: ClientFactoryFunc(
		func(context.Context, *delegatev1.ConnectorSettings) (SecretsManagerAPI, error) {
			return noCallSM{t: t}, nil
		})})
	out := r.Run(t.Context(), "t9", &delegatev1.SecretTask{Connector: &delegatev1.ConnectorSettings{Id: "c"},
		Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "db#" + long}}})
	if out.GetCode() != delegatev1.Code_INVALID_ARGUMENT || len(out.GetMessage()) > 200 {
		t.Errorf("get db#<18 KB> = %v %q, want a short INVALID_ARGUMENT", out.GetCode(), out.GetMessage())
	}

	parts := func(n, each int) string {
		p := make([]string, n)
		for i := range p {
			p[i] = strings.Repeat(string(rune('a'+i%26)), each)
		}
		return strings.Join(p, ".")
	}
	for _, tc := range []struct {
		name, ref string
		ok        bool
	}{
		{"64 parts, 1023 bytes", parts(64, 15), true},
		{"1024 bytes", strings.Repeat("k", 1024), true},
		{"1025 bytes", strings.Repeat("k", 1025), false},
		{"65 parts", parts(65, 1), false},
		{"empty", "", false},
	} {
		err := CheckJSONRef(tc.ref)
		if (err == nil) != tc.ok {
			t.Errorf("CheckJSONRef(%s) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !strings.HasPrefix(err.Msg, "name: ") {
			t.Errorf("CheckJSONRef(%s) = %q, want it to name the field", tc.name, err.Msg)
		}
	}
}

// TestItem9WalkIsBounded counts the walk's lookups: exact counts for a
// plain deep path and for backtracking under the documented rule (the
// longest literal key first), and a cap for a secret built to make the
// walk branch at every level.
func TestItem9WalkIsBounded(t *testing.T) {
	t.Parallel()

	// The deepest allowed path through a 9,000-deep secret: at a level
	// with r parts left, the whole rest, then heads from r-1 parts down
	// to the 1-part key that exists: r lookups (1 for the last).
	deep := nested("a", 9000)
	ref := strings.TrimSuffix(strings.Repeat("a.", 64), ".")
	got, w, err := extractJSON([]byte(deep), ref)
	if err != nil || !strings.HasPrefix(got, `{"a":{"a":`) {
		t.Fatalf("extractJSON(64-part path) = %.40q, %v; want the object at depth 64", got, err)
	}
	if want := 64*65/2 - 1 + 1; w.steps != want {
		t.Errorf("64-part path: %d lookups, want %d", w.steps, want)
	}
	if w.decoded > MaxJSONRefLevels*len(deep) {
		t.Errorf("64-part path: decoded %d bytes, want at most %d", w.decoded, MaxJSONRefLevels*len(deep))
	}

	// Backtracking: "a.a" (longest) leads nowhere, then "a" → "a" → "c".
	got, w, err = extractJSON([]byte(`{"a.a":{"b":1},"a":{"a":{"c":2}}}`), "a.a.c")
	if err != nil || got != "2" || w.steps != 7 {
		t.Errorf("extractJSON(a.a.c) = %q, %v after %d lookups; want 2 after 7 (a.a.c, a.a, c, a, a.c, a, c)", got, err, w.steps)
	}

	// Every object has "a" and "a.a": a path of n parts has Fibonacci(n)
	// groupings, each an object of the secret, none ending in "z".
	var fib func(d int) string
	memo := map[int]string{}
	fib = func(d int) string {
		if d <= 0 {
			return "{}"
		}
		if s, ok := memo[d]; ok {
			return s
		}
		s := `{"a":` + fib(d-1) + `,"a.a":` + fib(d-2) + `}`
		memo[d] = s
		return s
	}
	doc := fib(16)
	ref = strings.Repeat("a.", 40) + "z"
	_, w, err = extractJSON([]byte(doc), ref)
	if err == nil || err.Code != delegatev1.Code_INVALID_ARGUMENT || !strings.Contains(err.Msg, "ambiguous beyond 4096 lookups") {
		t.Fatalf("extractJSON(branching secret) = %v, want INVALID_ARGUMENT for the lookup bound", err)
	}
	if w.steps != MaxJSONRefSteps {
		t.Errorf("branching secret: %d lookups, want the bound %d", w.steps, MaxJSONRefSteps)
	}
	if w.decoded > MaxJSONRefLevels*len(doc) {
		t.Errorf("branching secret: decoded %d bytes of a %d-byte secret, want at most %d", w.decoded, len(doc), MaxJSONRefLevels*len(doc))
	}
	// The same secret with a reference it can resolve inside the bound.
	// (longest first: "a.a", then the literal rest "a.a").
	if got, _, err := extractJSON([]byte(doc), "a.a.a.a"); err != nil || got != fib(12) {
		t.Errorf("extractJSON(branching secret, a.a.a.a) = %.20q, %v; want the value at a.a then a.a", got, err)
	}
}

// TestItem9ErrorsQuoteAShortPrefix: every message about a reference quotes
// at most maxQuotedRef bytes of it.
func TestItem9ErrorsQuoteAShortPrefix(t *testing.T) {
	t.Parallel()
	ref := strings.Repeat("x", 200) + ".y"
	tail := strings.Repeat("x", maxQuotedRef+1)
	for _, doc := range []string{`{"k":1}`, `{"` + strings.Repeat("x", 200) + `":1}`, `not json`, `[1]`} {
		_, err := ExtractJSON([]byte(doc), ref)
		if err == nil {
			t.Fatalf("ExtractJSON(%s) = nil, want an error", doc)
		}
		if strings.Contains(err.Msg, tail) {
			t.Errorf("ExtractJSON(%s) error quotes more than %d bytes of the reference: %q", doc, maxQuotedRef, err.Msg)
		}
	}
}
