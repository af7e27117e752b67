package awsemu

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	// jwksTTL is how long a fetched JWKS is trusted; a token whose key id is
	// not in the cached set refetches at once.
	jwksTTL     = 30 * time.Second
	jwksTimeout = 5 * time.Second
	// clockLeeway tolerates small clock differences on nbf.
	clockLeeway = time.Minute
)

// tokenAlgorithms are the JWS algorithms AWS accepts for OIDC ID tokens.
var tokenAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.PS384, jose.PS512,
}

type assumeRoleWithWebIdentityResponse struct {
	XMLName  xml.Name                        `xml:"https://sts.amazonaws.com/doc/2011-06-15/ AssumeRoleWithWebIdentityResponse"`
	Result   assumeRoleWithWebIdentityResult `xml:"AssumeRoleWithWebIdentityResult"`
	Metadata responseMetadata                `xml:"ResponseMetadata"`
}

type assumeRoleWithWebIdentityResult struct {
	SubjectFromWebIdentityToken string          `xml:"SubjectFromWebIdentityToken"`
	Audience                    string          `xml:"Audience"`
	AssumedRoleUser             assumedRoleUser `xml:"AssumedRoleUser"`
	Credentials                 stsCredentials  `xml:"Credentials"`
	Provider                    string          `xml:"Provider"`
}

func errInvalidIdentityToken(format string, args ...any) *apiError {
	return errf(400, "InvalidIdentityToken", format, args...)
}

// assumeRoleWithWebIdentity verifies an OIDC ID token against the provider
// registered for its issuer and issues role-session credentials. The call
// is unsigned: the token is the credential.
func (s *Server) assumeRoleWithWebIdentity(c *call) (any, *apiError) {
	roleARN := c.form.Get("RoleArn")
	session := c.form.Get("RoleSessionName")
	raw := c.form.Get("WebIdentityToken")
	if len(roleARN) < 20 || len(roleARN) > 2048 {
		return nil, errSTSValidation("1 validation error detected: Value '%s' at 'roleArn' failed to satisfy constraint: "+
			"Member must have length between 20 and 2048", roleARN)
	}
	if e := validateSessionName(session); e != nil {
		return nil, e
	}
	if len(raw) < 4 || len(raw) > 20000 {
		return nil, errSTSValidation("1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: " +
			"Member must have length between 4 and 20000")
	}

	claims, audience, issuer, e := s.verifyWebIdentityToken(c.r.Context(), raw)
	if e != nil {
		return nil, e
	}
	role, ok := s.roles[roleARN]
	if !ok {
		return nil, errf(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
	}
	d, e := sessionDuration(c.form, role, false)
	if e != nil {
		return nil, e
	}
	user, creds := s.issueRoleSession(roleARN, session, d)
	return assumeRoleWithWebIdentityResponse{
		Result: assumeRoleWithWebIdentityResult{
			SubjectFromWebIdentityToken: claims.Subject,
			Audience:                    audience,
			AssumedRoleUser:             user,
			Credentials:                 creds,
			Provider:                    "arn:aws:iam::" + s.accountID + ":oidc-provider/" + providerHost(issuer),
		},
		Metadata: responseMetadata{RequestID: c.requestID},
	}, nil
}

// verifyWebIdentityToken checks the token's issuer, signature, audience and
// lifetime. It returns the claims, the audience that matched, and the
// issuer.
func (s *Server) verifyWebIdentityToken(ctx context.Context, raw string) (jwt.Claims, string, string, *apiError) {
	var claims jwt.Claims
	tok, err := jwt.ParseSigned(raw, tokenAlgorithms)
	if err != nil || len(tok.Headers) != 1 {
		return claims, "", "", errInvalidIdentityToken("The web identity token is not a valid signed JWT.")
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return claims, "", "", errInvalidIdentityToken("The web identity token's claims cannot be decoded.")
	}
	issuer := unverified.Issuer
	provider, ok := s.provider(issuer)
	if !ok {
		return claims, "", "", errInvalidIdentityToken("No OpenIDConnect provider found in your account for %s", issuer)
	}

	kid := tok.Headers[0].KeyID
	idpErr := errf(400, "IDPCommunicationError", "Couldn't retrieve verification key from your identity provider, "+
		"please reference AssumeRoleWithWebIdentity documentation for requirements")
	keys, err := s.providerKeys(ctx, provider, false)
	if err != nil {
		return claims, "", "", idpErr
	}
	candidates := candidateKeys(keys, kid)
	if len(candidates) == 0 && provider.JWKSURL != "" {
		// The issuer may have rotated its keys since the set was cached.
		if keys, err = s.providerKeys(ctx, provider, true); err != nil {
			return claims, "", "", idpErr
		}
		candidates = candidateKeys(keys, kid)
	}
	verified := false
	for _, k := range candidates {
		if err := tok.Claims(k.Public(), &claims); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return claims, "", "", errInvalidIdentityToken("The web identity token's signature is not valid for any key of its issuer.")
	}

	audience := ""
	for _, id := range provider.ClientIDs {
		if claims.Audience.Contains(id) {
			audience = id
			break
		}
	}
	if audience == "" {
		return claims, "", "", errInvalidIdentityToken("Incorrect token audience")
	}
	now := s.now()
	if claims.Expiry == nil {
		return claims, "", "", errInvalidIdentityToken("The web identity token has no expiration (exp) claim.")
	}
	if exp := claims.Expiry.Time(); !now.Before(exp) {
		return claims, "", "", errf(400, "ExpiredTokenException", "Token expired: current date/time %s must be before the expiration date/time %s",
			now.UTC().Format(time.RFC3339), exp.UTC().Format(time.RFC3339))
	}
	if claims.NotBefore != nil && now.Add(clockLeeway).Before(claims.NotBefore.Time()) {
		return claims, "", "", errInvalidIdentityToken("The web identity token is not valid yet (nbf).")
	}
	return claims, audience, issuer, nil
}

// provider finds the OIDC provider for an issuer, ignoring a trailing slash.
func (s *Server) provider(issuer string) (OIDCProvider, bool) {
	if issuer == "" {
		return OIDCProvider{}, false
	}
	if p, ok := s.providers[issuer]; ok {
		return p, true
	}
	for url, p := range s.providers {
		if strings.TrimSuffix(url, "/") == strings.TrimSuffix(issuer, "/") {
			return p, true
		}
	}
	return OIDCProvider{}, false
}

// providerHost is the provider's URL without its scheme, as IAM names OIDC
// providers in their ARNs.
func providerHost(issuer string) string {
	issuer = strings.TrimPrefix(issuer, "https://")
	issuer = strings.TrimPrefix(issuer, "http://")
	return strings.TrimSuffix(issuer, "/")
}

func (s *Server) providerKeys(ctx context.Context, p OIDCProvider, refresh bool) (*jose.JSONWebKeySet, error) {
	if p.JWKSURL == "" {
		if p.Keys == nil {
			return &jose.JSONWebKeySet{}, nil
		}
		return p.Keys, nil
	}
	return s.jwks.get(ctx, p.JWKSURL, refresh)
}

// candidateKeys returns the keys a token with key id kid may be signed with.
func candidateKeys(set *jose.JSONWebKeySet, kid string) []jose.JSONWebKey {
	if kid != "" {
		return set.Key(kid)
	}
	return set.Keys
}

// jwksCache fetches and caches JWKS documents by URL.
type jwksCache struct {
	client *http.Client

	mu      sync.Mutex // guards entries
	entries map[string]jwksEntry
}

type jwksEntry struct {
	keys    *jose.JSONWebKeySet
	fetched time.Time // by the wall clock, not Options.Now
}

func newJWKSCache() *jwksCache {
	return &jwksCache{
		client:  &http.Client{Timeout: jwksTimeout},
		entries: map[string]jwksEntry{},
	}
}

// get returns the key set at url, from the cache while it is fresh, or
// fetched anew with refresh.
func (c *jwksCache) get(ctx context.Context, url string, refresh bool) (*jose.JSONWebKeySet, error) {
	c.mu.Lock()
	e, ok := c.entries[url]
	c.mu.Unlock()
	if ok && !refresh && time.Since(e.fetched) < jwksTTL {
		return e.keys, nil
	}
	keys, err := c.fetch(ctx, url)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.entries[url] = jwksEntry{keys: keys, fetched: time.Now()}
	c.mu.Unlock()
	return keys, nil
}

func (c *jwksCache) fetch(ctx context.Context, url string) (*jose.JSONWebKeySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks: %s", resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, err
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("jwks: no keys")
	}
	return &set, nil
}

func (c *jwksCache) close() { c.client.CloseIdleConnections() }
