package harness

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"gopkg.in/yaml.v3"
)

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago.
// Another process may take it before the caller binds it.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// RandomToken is prefix followed by 24 random bytes, base64url.
func RandomToken(prefix string) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// SHA256Hex is the hex SHA-256 of s, as the manager's config holds tokens.
func SHA256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// WriteYAML writes v as YAML to path, readable by its owner only.
func WriteYAML(path string, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// WriteMasterKey writes a new random master key (base64) to path, for a
// manager's master_key_file.
func WriteMasterKey(path string) error {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
}

// Token is an entry of a manager's auth.delegate_tokens or
// auth.operator_tokens: the token itself, which the config holds as its
// hash.
type Token struct {
	Name, Token string
	Scope       string // "" for an unscoped token
}

func (t Token) entry() map[string]any {
	e := map[string]any{"name": t.Name, "sha256": SHA256Hex(t.Token)}
	if t.Scope != "" {
		e["scope"] = t.Scope
	}
	return e
}

// Manager is what every test or benchmark manager's config holds: its
// listeners, its data dir and master key, its tokens and its log. The
// caller adds its own sections (store, dispatch, limits, ...) to what
// YAML returns.
type Manager struct {
	Addr, HTTPAddr         string
	DataDir, MasterKeyFile string
	DelegateTokens         []Token
	OperatorTokens         []Token
	LogLevel               string // JSON logs at this level
}

// YAML is the config as a map for WriteYAML.
func (c Manager) YAML() map[string]any {
	entries := func(ts []Token) []map[string]any {
		out := make([]map[string]any, 0, len(ts))
		for _, t := range ts {
			out = append(out, t.entry())
		}
		return out
	}
	return map[string]any{
		"listen":          c.Addr,
		"http_listen":     c.HTTPAddr,
		"data_dir":        c.DataDir,
		"master_key_file": c.MasterKeyFile,
		"tls":             map[string]any{"insecure": true},
		"auth": map[string]any{
			"delegate_tokens": entries(c.DelegateTokens),
			"operator_tokens": entries(c.OperatorTokens),
		},
		"log": map[string]any{"level": c.LogLevel, "format": "json"},
	}
}

// Agent is what every test or benchmark agent's config holds. The caller
// adds its own keys to what YAML returns.
type Agent struct {
	Manager     string // the manager's gRPC address
	Name        string
	Token       string // "": none in the file (given in SMD_TOKEN)
	Tags        []string
	Concurrency int
	Endpoints   []string // endpoints.allow: the emulator's URL
	LogLevel    string   // JSON logs at this level
}

// YAML is the config as a map for WriteYAML.
func (c Agent) YAML() map[string]any {
	m := map[string]any{
		"manager":     c.Manager,
		"name":        c.Name,
		"tags":        c.Tags,
		"concurrency": c.Concurrency,
		"tls":         map[string]any{"insecure": true},
		"log":         map[string]any{"level": c.LogLevel, "format": "json"},
		"endpoints":   map[string]any{"allow": c.Endpoints},
	}
	if c.Token != "" {
		m["token"] = c.Token
	}
	return m
}

// ErrExited: the manager exited before it was ready.
var ErrExited = errors.New("exited")

// WaitReady polls the manager's /readyz on httpAddr until it answers 200.
// It returns an error wrapping ErrExited, with the exit code and the tail
// of the log, when p exits first, and an error after timeout.
func WaitReady(p *Proc, httpAddr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("%s %w with code %d:\n%s", p.Name, ErrExited, p.ExitCode(), Tail(p.Log(), 20))
		}
		if resp, err := http.Get("http://" + httpAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready on %s within %s", p.Name, httpAddr, timeout)
}

// Bearer sends an operator token with every call. The harness talks
// plaintext to 127.0.0.1, so it does not require transport security.
type Bearer string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (Bearer) RequireTransportSecurity() bool { return false }

// Dial returns a plaintext client connection to a manager's gRPC address
// that sends token with every call.
func Dial(addr, token string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(Bearer(token)))
}

// Cluster is the cluster: section of a replica's config: several
// managers on one PostgreSQL database and schema, each with this section
// (the same Name and peer token), their own listeners and data dir, and
// the same master key and tokens.
type Cluster struct {
	Name string
	// PeerTokenFile holds the peer token (WritePeerToken).
	PeerTokenFile string
	// Zero durations are left to the manager's defaults.
	BeatInterval, DeadAfter, PollInterval time.Duration
}

// YAML is the section as a map, for the "cluster" key of a manager's
// config.
func (c Cluster) YAML() map[string]any {
	m := map[string]any{"name": c.Name, "peer_token_file": c.PeerTokenFile}
	for key, d := range map[string]time.Duration{"beat_interval": c.BeatInterval, "dead_after": c.DeadAfter, "poll_interval": c.PollInterval} {
		if d > 0 {
			m[key] = d.String()
		}
	}
	return m
}

// WritePeerToken writes a new random peer token (48 bytes, base64) to
// path, for the replicas' cluster.peer_token_file.
func WritePeerToken(path string) error {
	b := make([]byte, 48)
	_, _ = rand.Read(b)
	return os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(b)+"\n"), 0o600)
}
