package manager_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/smdelegate/smdelegate/internal/config/configtest"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/oidc"
)

// TestItem12ManagerYAMLShowsDefaults: every key configs/manager.yaml
// does not mark an example holds DefaultConfig()'s value, and every
// setting is in the file (configtest states the convention).
func TestItem12ManagerYAMLShowsDefaults(t *testing.T) {
	t.Parallel()
	configtest.CheckDefaults(t, "../configs/manager.yaml", manager.DefaultConfig())
}

// httpGet returns the status and body of GET url.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestItem12OIDCListenServesOnlyDiscovery: with oidc.listen set, that
// listener, the one that must face AWS, answers the discovery document
// and the JWKS (the issuer URL defaults to it) and nothing else: no
// /metrics, /healthz or /readyz. http_listen keeps those and no longer
// serves the OIDC documents.
func TestItem12OIDCListenServesOnlyDiscovery(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, func(c *manager.Config) {
		c.HTTPListen = "127.0.0.1:0"
		c.OIDC.Listen = "127.0.0.1:0"
	})
	public, private := "http://"+srv.OIDCAddr(), "http://"+srv.HTTPAddr()
	if srv.OIDCAddr() == "" || srv.OIDCAddr() == srv.HTTPAddr() {
		t.Fatalf("OIDCAddr() = %q beside HTTPAddr() %q, want a listener of its own", srv.OIDCAddr(), srv.HTTPAddr())
	}

	code, body := httpGet(t, public+oidc.DiscoveryPath)
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &doc) != nil || doc.Issuer != public || doc.JWKSURI != public+oidc.JWKSPath {
		t.Fatalf("GET %s on oidc.listen = %d %s, want the discovery document of issuer %s", oidc.DiscoveryPath, code, body, public)
	}
	code, body = httpGet(t, public+oidc.JWKSPath)
	var jwks struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &jwks) != nil || len(jwks.Keys) == 0 {
		t.Errorf("GET %s on oidc.listen = %d %s, want the key set", oidc.JWKSPath, code, body)
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz", "/", "/.well-known/", "/debug/pprof/"} {
		if code, body := httpGet(t, public+path); code != http.StatusNotFound || strings.Contains(body, "smd_") {
			t.Errorf("GET %s on oidc.listen = %d %.80q, want 404", path, code, body)
		}
	}

	for path, want := range map[string]string{"/metrics": "smd_connected_delegates", "/healthz": "ok", "/readyz": "ready"} {
		if code, body := httpGet(t, private+path); code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s on http_listen = %d %.80q, want 200 with %q", path, code, body, want)
		}
	}
	if code, _ := httpGet(t, private+oidc.DiscoveryPath); code != http.StatusNotFound {
		t.Errorf("GET %s on http_listen = %d, want 404: with oidc.listen set the documents are served there only", oidc.DiscoveryPath, code)
	}
}

// TestItem12OIDCListenUnset: without oidc.listen the documents stay on
// http_listen, beside the metrics, as before.
func TestItem12OIDCListenUnset(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, func(c *manager.Config) { c.HTTPListen = "127.0.0.1:0" })
	if srv.OIDCAddr() != "" {
		t.Errorf("OIDCAddr() = %q, want none", srv.OIDCAddr())
	}
	for _, path := range []string{oidc.DiscoveryPath, oidc.JWKSPath, "/metrics"} {
		if code, _ := httpGet(t, "http://"+srv.HTTPAddr()+path); code != http.StatusOK {
			t.Errorf("GET %s on http_listen = %d, want 200", path, code)
		}
	}
}
