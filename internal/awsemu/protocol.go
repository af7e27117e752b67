package awsemu

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

const (
	serviceSM  = "secretsmanager"
	serviceSTS = "sts"

	stsNamespace = "https://sts.amazonaws.com/doc/2011-06-15/"
	redacted     = "<redacted>"
)

// call is one request on its way through ServeHTTP.
type call struct {
	requestID string
	r         *http.Request
	raw       []byte // the body as sent: what the signature covers
	body      []byte // the body after Content-Encoding is undone
	service   string
	action    string
	form      url.Values // STS only
	principal principal  // the authenticated caller; zero for unsigned calls
}

func (c *call) qualifiedAction() string { return c.service + "." + c.action }

// params decodes the request for Request.Params, redacting secret material.
func (c *call) params() map[string]any {
	out := map[string]any{}
	if c.service == serviceSM {
		if len(bytes.TrimSpace(c.body)) > 0 {
			_ = json.Unmarshal(c.body, &out) // a malformed body is refused later
		}
		for _, k := range []string{"SecretString", "SecretBinary"} {
			if _, ok := out[k]; ok {
				out[k] = redacted
			}
		}
		return out
	}
	for k, v := range c.form {
		switch {
		case k == "WebIdentityToken":
			out[k] = redacted
		case len(v) == 1:
			out[k] = v[0]
		default:
			out[k] = append([]string(nil), v...)
		}
	}
	return out
}

// apiError is an AWS error reply. Its message never carries secret material.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func errSerialization(msg string) *apiError {
	return &apiError{status: 400, code: "SerializationException", message: msg}
}

func (s *Server) writeError(w http.ResponseWriter, c *call, e *apiError) {
	if c.service == serviceSM {
		writeJSONError(w, c.requestID, e)
		return
	}
	writeXMLError(w, c.requestID, e)
}

// writeJSONError writes a JSON 1.1 protocol error. The SDK takes the code from
// the x-amzn-ErrorType header first and the body's __type second, and reads
// the message from "message" or "Message".
func writeJSONError(w http.ResponseWriter, requestID string, e *apiError) {
	body, _ := json.Marshal(struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}{e.code, e.message})
	h := w.Header()
	h.Set("Content-Type", "application/x-amz-json-1.1")
	h.Set("x-amzn-RequestId", requestID)
	h.Set("x-amzn-ErrorType", e.code)
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
}

func writeJSON(w http.ResponseWriter, requestID string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeJSONError(w, requestID, errf(500, "InternalServiceError", "cannot encode the response"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-amz-json-1.1")
	h.Set("x-amzn-RequestId", requestID)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

type stsErrorResponse struct {
	XMLName   xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ ErrorResponse"`
	Error     stsErrorBody
	RequestID string `xml:"RequestId"`
}

type stsErrorBody struct {
	Type    string
	Code    string
	Message string
}

// writeXMLError writes a query protocol error: the SDK reads
// ErrorResponse/Error/Code and Message.
func writeXMLError(w http.ResponseWriter, requestID string, e *apiError) {
	typ := "Sender"
	if e.status >= 500 {
		typ = "Receiver"
	}
	writeXML(w, requestID, e.status, stsErrorResponse{
		Error:     stsErrorBody{Type: typ, Code: e.code, Message: e.message},
		RequestID: requestID,
	})
}

func writeXML(w http.ResponseWriter, requestID string, status int, v any) {
	body, err := xml.Marshal(v)
	if err != nil {
		status = 500
		body = []byte("<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code>" +
			"<Message>cannot encode the response</Message></Error></ErrorResponse>")
	}
	h := w.Header()
	h.Set("Content-Type", "text/xml")
	h.Set("x-amzn-RequestId", requestID)
	w.WriteHeader(status)
	_, _ = io.WriteString(w, xml.Header)
	_, _ = w.Write(body)
}

// responseMetadata closes every STS reply.
type responseMetadata struct {
	RequestID string `xml:"RequestId"`
}

// actionFromTarget returns the action of "secretsmanager.<Action>", or "".
func actionFromTarget(target string) string {
	svc, action, ok := strings.Cut(target, ".")
	if !ok || svc != serviceSM || action == "" {
		return ""
	}
	return action
}

// stsForm returns the query-protocol parameters: the form body merged with
// the URL query (STS accepts both POST and GET).
func stsForm(r *http.Request, body []byte) (url.Values, error) {
	form, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, err
	}
	ct := r.Header.Get("Content-Type")
	if len(body) > 0 && (ct == "" || strings.HasPrefix(ct, "application/x-www-form-urlencoded")) {
		fromBody, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, err
		}
		for k, v := range fromBody {
			form[k] = append(form[k], v...)
		}
	}
	return form, nil
}

// decodeContent undoes a Content-Encoding the emulator understands.
func decodeContent(encoding string, raw []byte) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity", "aws-chunked":
		return raw, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		return io.ReadAll(io.LimitReader(zr, maxBodyBytes))
	default:
		return nil, fmt.Errorf("unsupported Content-Encoding %q", encoding)
	}
}

// newRequestID returns a random UUID, the shape of AWS request ids.
func newRequestID() string { return newUUID() }

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

const alphanumeric = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomString returns n characters drawn uniformly from alphabet with crypto/rand.
func randomString(n int, alphabet string) string {
	out := make([]byte, n)
	for i := range out {
		out[i] = alphabet[randIntn(len(alphabet))]
	}
	return string(out)
}

// randIntn returns a uniform integer in [0, n) from crypto/rand, n <= 1<<16.
func randIntn(n int) int {
	limit := 65536 - 65536%n
	var b [2]byte
	for {
		_, _ = rand.Read(b[:])
		v := int(b[0])<<8 | int(b[1])
		if v < limit {
			return v % n
		}
	}
}

// uniqueID derives a stable IAM-style unique id ("AIDA…", "AROA…") from seed.
func uniqueID(prefix, seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return prefix + base32.StdEncoding.EncodeToString(sum[:])[:17]
}
