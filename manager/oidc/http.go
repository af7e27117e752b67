package oidc

import (
	"encoding/json"
	"fmt"
	"net/http"

	jose "github.com/go-jose/go-jose/v4"
)

// Cache lifetimes of the served documents. The JWKS one is short so a
// verifier that caches it sees a new key soon after a rotation.
const (
	discoveryCacheControl = "public, max-age=300"
	jwksCacheControl      = "public, max-age=60"
)

// discoveryDoc is the subset of OpenID Provider Metadata (OpenID Connect
// Discovery 1.0 §3) an ID-token-only issuer publishes; AWS IAM reads
// issuer and jwks_uri.
type discoveryDoc struct {
	Issuer          string   `json:"issuer"`
	JWKSURI         string   `json:"jwks_uri"`
	ResponseTypes   []string `json:"response_types_supported"`
	SubjectTypes    []string `json:"subject_types_supported"`
	SigningAlgs     []string `json:"id_token_signing_alg_values_supported"`
	ScopesSupported []string `json:"scopes_supported"`
	ClaimsSupported []string `json:"claims_supported"`
}

func (i *Issuer) discoveryDocument() ([]byte, error) {
	b, err := json.Marshal(discoveryDoc{
		Issuer:          i.issuer,
		JWKSURI:         i.JWKSURL(),
		ResponseTypes:   []string{"id_token"},
		SubjectTypes:    []string{"public"},
		SigningAlgs:     []string{string(jose.ES256)},
		ScopesSupported: []string{"openid"},
		ClaimsSupported: []string{"iss", "sub", "aud", "iat", "nbf", "exp", "jti",
			"account", "org", "project", "connector", "task_id", "context"},
	})
	if err != nil {
		return nil, fmt.Errorf("oidc: discovery document: %w", err)
	}
	return b, nil
}

// Handler serves GET (and HEAD) of the discovery document at the issuer
// URL's path + DiscoveryPath and of the JWKS at its path + JWKSPath; any
// other path is 404. For an issuer URL without a path, mount it as
// mux.Handle("/.well-known/", issuer.Handler()).
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(i.basePath+DiscoveryPath, func(w http.ResponseWriter, r *http.Request) {
		serveJSON(w, r, discoveryCacheControl, i.discovery)
	})
	mux.HandleFunc(i.basePath+JWKSPath, func(w http.ResponseWriter, r *http.Request) {
		b, err := json.Marshal(i.JWKS())
		if err != nil {
			i.log.Error().Err(err).Msg("oidc: marshal JWKS")
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		serveJSON(w, r, jwksCacheControl, b)
	})
	return mux
}

func serveJSON(w http.ResponseWriter, r *http.Request, cacheControl string, body []byte) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", cacheControl)
	h.Set("X-Content-Type-Options", "nosniff")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}
