package awsauth

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// credentialsFor returns the cached credentials provider for r on top of
// base, the delegate's default configuration. For INSTANCE_ROLE it is the
// SDK default chain LoadDefaultConfig built (already a CredentialsCache);
// every other type gets its own aws.NewCredentialsCache. The result marks
// provider failures as *CredentialError.
func credentialsFor(r *resolved, base aws.Config, sessionName string, token *tokenHolder) aws.CredentialsProvider {
	var p aws.CredentialsProvider
	switch r.credType {
	case delegatev1.CredentialType_ACCESS_KEY:
		p = aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(r.accessKeyID, r.secretAccessKey, ""))
	case delegatev1.CredentialType_INSTANCE_ROLE:
		p = base.Credentials
		if _, cached := p.(*aws.CredentialsCache); !cached && p != nil {
			p = aws.NewCredentialsCache(p)
		}
	case delegatev1.CredentialType_ASSUME_ROLE:
		// The STS client signs with the delegate's own default chain.
		stsClient := sts.NewFromConfig(base, stsEndpoint(r))
		p = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(stsClient, r.roleARN, func(o *stscreds.AssumeRoleOptions) {
			o.RoleSessionName = sessionName
			if r.duration != 0 {
				o.Duration = r.duration
			}
			if r.externalID != "" {
				o.ExternalID = aws.String(r.externalID)
			}
		}), refreshEarly)
	case delegatev1.CredentialType_OIDC:
		// AssumeRoleWithWebIdentity is unsigned; anonymous credentials make
		// sure the delegate's own chain is never consulted for it.
		stsCfg := base.Copy()
		stsCfg.Credentials = aws.AnonymousCredentials{}
		stsClient := sts.NewFromConfig(stsCfg, stsEndpoint(r))
		p = aws.NewCredentialsCache(stscreds.NewWebIdentityRoleProvider(stsClient, r.roleARN, token, func(o *stscreds.WebIdentityRoleOptions) {
			o.RoleSessionName = sessionName
			if r.duration != 0 {
				o.Duration = r.duration
			}
		}), refreshEarly)
	}
	return &markingProvider{credType: r.credType.String(), inner: p}
}

// ExpiryWindow is how long before their expiry the pool refreshes STS
// session credentials, so that no call is signed with credentials that
// expire in flight. Part of it (up to half) is random, so that many
// connectors do not refresh at once.
const ExpiryWindow = 2 * time.Minute

func refreshEarly(o *aws.CredentialsCacheOptions) {
	o.ExpiryWindow = ExpiryWindow
	o.ExpiryWindowJitterFrac = 0.5
}

func stsEndpoint(r *resolved) func(*sts.Options) {
	return func(o *sts.Options) {
		if r.stsEndpointURL != "" {
			o.BaseEndpoint = aws.String(r.stsEndpointURL)
		}
	}
}

// markingProvider wraps provider errors in *CredentialError so the task
// layer can tell a credential failure from a Secrets Manager error. It sits
// outside the cache and passes successful retrievals through untouched.
type markingProvider struct {
	credType string
	inner    aws.CredentialsProvider
}

func (m *markingProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	if m.inner == nil {
		return aws.Credentials{}, &CredentialError{CredentialType: m.credType, Err: errors.New("no credentials provider configured")}
	}
	c, err := m.inner.Retrieve(ctx)
	if err != nil {
		return aws.Credentials{}, &CredentialError{CredentialType: m.credType, Err: err}
	}
	return c, nil
}

// ProviderSources reports the wrapped provider's sources for the SDK's
// user-agent metrics.
func (m *markingProvider) ProviderSources() []aws.CredentialSource {
	if s, ok := m.inner.(aws.CredentialProviderSource); ok {
		return s.ProviderSources()
	}
	return nil
}

// tokenHolder feeds stscreds.WebIdentityRoleProvider the most recent OIDC
// token a task brought. Tokens change with every task, but the provider only
// asks for one when the cached credentials near expiry, so the credentials
// are reused across tasks and a fresh token is at hand when needed.
type tokenHolder struct {
	v atomic.Pointer[string]
}

func (t *tokenHolder) set(tok string) {
	if tok != "" {
		t.v.Store(&tok)
	}
}

// GetIdentityToken implements stscreds.IdentityTokenRetriever.
func (t *tokenHolder) GetIdentityToken() ([]byte, error) {
	p := t.v.Load()
	if p == nil {
		return nil, credentialField("web_identity_token", "is empty: the manager sent no OIDC token with the task")
	}
	return []byte(*p), nil
}

// loadBase loads the delegate's default configuration: region from the
// connector or AWS_REGION/shared config, the SDK default credential chain,
// endpoint environment variables (AWS_ENDPOINT_URL,
// AWS_ENDPOINT_URL_SECRETS_MANAGER, AWS_ENDPOINT_URL_STS, honoured by the
// service clients built from it) and the pool's retryer.
//
// The pool's shared HTTP client is set after loading rather than passed in:
// LoadDefaultConfig refuses a plain *http.Client when AWS_CA_BUNDLE is set,
// and the pool's default client already trusts that bundle. The default
// chain's own credential clients (IMDS, ECS) keep the SDK's client.
func (p *Pool) loadBase(ctx context.Context, r *resolved) (aws.Config, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(p.newRetryer),
	}
	if r.region != "" {
		opts = append(opts, config.WithRegion(r.region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, err
	}
	cfg.HTTPClient = p.httpClient
	return cfg, nil
}
