package awsemu

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	sigV4Algorithm  = "AWS4-HMAC-SHA256"
	amzDateFormat   = "20060102T150405Z"
	unsignedPayload = "UNSIGNED-PAYLOAD"
)

// credential is a registered access key: long-term (expires zero) or
// temporary (issued by STS, with a session token).
type credential struct {
	secret       string
	sessionToken string    // "" for long-term keys
	expires      time.Time // zero for long-term keys
	principal    principal
}

// principal is who made a call.
type principal struct {
	accessKeyID string
	arn         string // arn:aws:iam::ACCOUNT:user/NAME or arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION
	userID      string // AIDA… for users, AROA…:SESSION for role sessions
	roleSession bool   // credentials from AssumeRole*: a further AssumeRole is role chaining
}

// authFailure names why a request's credentials were refused; each service
// has its own code for it.
type authFailure int

const (
	authMissing authFailure = iota
	authIncomplete
	authUnknownKey
	authBadSignature
	authExpired
)

func authError(service string, f authFailure, msg string) *apiError {
	type codes struct {
		status int
		code   string
	}
	var c codes
	if service == serviceSM {
		c = map[authFailure]codes{
			authMissing:      {400, "MissingAuthenticationTokenException"},
			authIncomplete:   {400, "IncompleteSignatureException"},
			authUnknownKey:   {400, "UnrecognizedClientException"},
			authBadSignature: {400, "InvalidSignatureException"},
			authExpired:      {400, "ExpiredTokenException"},
		}[f]
	} else {
		c = map[authFailure]codes{
			authMissing:      {403, "MissingAuthenticationToken"},
			authIncomplete:   {400, "IncompleteSignature"},
			authUnknownKey:   {403, "InvalidClientTokenId"},
			authBadSignature: {403, "SignatureDoesNotMatch"},
			authExpired:      {403, "ExpiredToken"},
		}[f]
	}
	return &apiError{status: c.status, code: c.code, message: msg}
}

const (
	msgInvalidToken = "The security token included in the request is invalid."
	msgExpiredToken = "The security token included in the request is expired"
	msgBadSignature = "The request signature we calculated does not match the signature you provided. " +
		"Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)

// sigV4Auth is a parsed Authorization header.
type sigV4Auth struct {
	accessKeyID   string
	date          string // yyyymmdd
	region        string
	service       string
	signedHeaders []string
	signature     string
}

// accessKeyFromAuthorization returns the access key id an Authorization
// header claims, or "".
func accessKeyFromAuthorization(h string) string {
	a, ok := parseAuthorization(h)
	if !ok {
		return ""
	}
	return a.accessKeyID
}

func parseAuthorization(h string) (sigV4Auth, bool) {
	var a sigV4Auth
	rest, ok := strings.CutPrefix(h, sigV4Algorithm+" ")
	if !ok {
		return a, false
	}
	for part := range strings.SplitSeq(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, false
		}
		switch k {
		case "Credential":
			fields := strings.Split(v, "/")
			if len(fields) != 5 || fields[4] != "aws4_request" {
				return a, false
			}
			a.accessKeyID, a.date, a.region, a.service = fields[0], fields[1], fields[2], fields[3]
		case "SignedHeaders":
			a.signedHeaders = strings.Split(v, ";")
		case "Signature":
			a.signature = v
		}
	}
	if a.accessKeyID == "" || len(a.signedHeaders) == 0 || a.signature == "" {
		return a, false
	}
	return a, true
}

// authenticate verifies the request's SigV4 signature and returns the caller.
func (s *Server) authenticate(c *call) (principal, *apiError) {
	r := c.r
	h := r.Header.Get("Authorization")
	if h == "" {
		if r.URL.Query().Get("X-Amz-Signature") != "" {
			return principal{}, authError(c.service, authIncomplete, "awsemu does not accept presigned (query string) authentication")
		}
		return principal{}, authError(c.service, authMissing, "Missing Authentication Token")
	}
	a, ok := parseAuthorization(h)
	if !ok {
		return principal{}, authError(c.service, authIncomplete,
			"Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters in the AWS4-HMAC-SHA256 form.")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	if _, err := time.Parse(amzDateFormat, amzDate); err != nil {
		return principal{}, authError(c.service, authIncomplete, "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
	}

	s.mu.Lock()
	cred, known := s.creds[a.accessKeyID]
	var cp credential
	if known {
		cp = *cred
	}
	s.mu.Unlock()
	if !known {
		return principal{}, authError(c.service, authUnknownKey, msgInvalidToken)
	}
	// A temporary key without its token, a wrong token, or a token on a long-term key.
	if token := r.Header.Get("X-Amz-Security-Token"); !hmac.Equal([]byte(token), []byte(cp.sessionToken)) {
		return principal{}, authError(c.service, authUnknownKey, msgInvalidToken)
	}
	if !cp.expires.IsZero() && !s.now().Before(cp.expires) {
		return principal{}, authError(c.service, authExpired, msgExpiredToken)
	}

	if a.service != c.service {
		return principal{}, authError(c.service, authBadSignature, "Credential should be scoped to correct service: '"+c.service+"'.")
	}
	if a.region != s.region && !(c.service == serviceSTS && a.region == defaultRegion) {
		return principal{}, authError(c.service, authBadSignature,
			"Credential should be scoped to a valid region, not '"+a.region+"'. This endpoint serves '"+s.region+"'.")
	}
	if !strings.HasPrefix(amzDate, a.date) {
		return principal{}, authError(c.service, authBadSignature, "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.")
	}
	if !slices.Contains(a.signedHeaders, "host") {
		return principal{}, authError(c.service, authBadSignature, "'Host' must be a 'SignedHeader' in the AWS Authorization.")
	}

	payloadHash := hexSHA256(c.raw)
	if claimed := r.Header.Get("X-Amz-Content-Sha256"); claimed != "" {
		if claimed != unsignedPayload && claimed != payloadHash {
			return principal{}, authError(c.service, authBadSignature, "The provided 'x-amz-content-sha256' header does not match what was computed.")
		}
		payloadHash = claimed
	}
	canonical := canonicalRequest(r, a.signedHeaders, payloadHash)
	scope := a.date + "/" + a.region + "/" + a.service + "/aws4_request"
	stringToSign := sigV4Algorithm + "\n" + amzDate + "\n" + scope + "\n" + hexSHA256([]byte(canonical))
	key := signingKey(cp.secret, a.date, a.region, a.service)
	want := hex.EncodeToString(hmacSHA256(key, []byte(stringToSign)))
	if !hmac.Equal([]byte(want), []byte(a.signature)) {
		return principal{}, authError(c.service, authBadSignature, msgBadSignature)
	}
	return cp.principal, nil
}

// canonicalRequest rebuilds the SigV4 canonical request the way
// aws-sdk-go-v2's signer builds it for a non-S3 service.
func canonicalRequest(r *http.Request, signedHeaders []string, payloadHash string) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	b.WriteString(canonicalURI(r.URL))
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(r.URL.Query()))
	b.WriteByte('\n')
	for _, name := range signedHeaders {
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(canonicalHeaderValue(r, name))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(signedHeaders, ";"))
	b.WriteByte('\n')
	b.WriteString(payloadHash)
	return b.String()
}

func canonicalHeaderValue(r *http.Request, name string) string {
	var values []string
	switch name {
	case "host":
		values = []string{r.Host}
	case "content-length":
		values = r.Header.Values("Content-Length")
		if len(values) == 0 && r.ContentLength >= 0 {
			values = []string{strconv.FormatInt(r.ContentLength, 10)}
		}
	case "transfer-encoding":
		values = r.TransferEncoding
	default:
		values = r.Header.Values(name)
	}
	for i, v := range values {
		values[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(values, ",")
}

// canonicalURI escapes the request path a second time, as the SDK does for
// every service but S3.
func canonicalURI(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		return "/"
	}
	return escapeRFC3986(p, true)
}

func canonicalQuery(q url.Values) string {
	type pair struct{ k, v string }
	var pairs []pair
	for k, vs := range q {
		if k == "X-Amz-Signature" {
			continue
		}
		for _, v := range vs {
			pairs = append(pairs, pair{escapeRFC3986(k, false), escapeRFC3986(v, false)})
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p.k + "=" + p.v
	}
	return strings.Join(parts, "&")
}

// escapeRFC3986 percent-encodes every byte but the unreserved characters
// (and '/' when keepSlash).
func escapeRFC3986(s string, keepSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '.', c == '~', keepSlash && c == '/':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}

func signingKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), []byte(date))
	k = hmacSHA256(k, []byte(region))
	k = hmacSHA256(k, []byte(service))
	return hmacSHA256(k, []byte("aws4_request"))
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

func hexSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
