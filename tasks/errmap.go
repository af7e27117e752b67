package tasks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/smdelegate/smdelegate/tasks/awsauth"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// awsClass is how one AWS error code maps to a task outcome.
type awsClass struct {
	code      delegatev1.Code
	retryable bool
}

// awsErrors is THE table from AWS error codes (Secrets Manager's JSON
// "__type" and STS's query-protocol codes) to task outcome codes (design
// §7). translate consults it once per failed call; nothing else in the
// package matches AWS codes, except InvalidRequestException's "scheduled
// for deletion" refinement in translate. A code the table does not hold
// ends INTERNAL with the code named in the message and a warn line.
//
// Throttling and 5xx are retryable: the SDK has already retried them
// (MaxAttempts), so the task layer only reports that another try later may
// succeed. HTTP 501 is UNSUPPORTED whatever the code (classifyAWS).
var awsErrors = map[string]awsClass{
	// The endpoint does not implement the operation: AWS's answer to an
	// unknown action (JSON protocols; query protocols), and what
	// third-party emulators and some VPC endpoints answer.
	"UnknownOperationException": {code: delegatev1.Code_UNSUPPORTED},
	"InvalidAction":             {code: delegatev1.Code_UNSUPPORTED},
	"NotImplemented":            {code: delegatev1.Code_UNSUPPORTED},
	// Secrets Manager.
	"ResourceNotFoundException":        {code: delegatev1.Code_NOT_FOUND},
	"ResourceExistsException":          {code: delegatev1.Code_ALREADY_EXISTS},
	"InvalidParameterException":        {code: delegatev1.Code_INVALID_ARGUMENT},
	"InvalidRequestException":          {code: delegatev1.Code_INVALID_ARGUMENT}, // or SCHEDULED_FOR_DELETION, see translate
	"ValidationException":              {code: delegatev1.Code_INVALID_ARGUMENT},
	"InvalidNextTokenException":        {code: delegatev1.Code_INVALID_ARGUMENT},
	"MalformedPolicyDocumentException": {code: delegatev1.Code_INVALID_ARGUMENT},
	"LimitExceededException":           {code: delegatev1.Code_INVALID_ARGUMENT},
	"PreconditionNotMetException":      {code: delegatev1.Code_INVALID_ARGUMENT},
	"AccessDeniedException":            {code: delegatev1.Code_ACCESS_DENIED},
	"AccessDenied":                     {code: delegatev1.Code_ACCESS_DENIED},
	"DecryptionFailure":                {code: delegatev1.Code_ACCESS_DENIED},
	"EncryptionFailure":                {code: delegatev1.Code_ACCESS_DENIED},
	"ThrottlingException":              {code: delegatev1.Code_THROTTLED, retryable: true},
	"Throttling":                       {code: delegatev1.Code_THROTTLED, retryable: true},
	"TooManyRequestsException":         {code: delegatev1.Code_THROTTLED, retryable: true},
	"RequestLimitExceeded":             {code: delegatev1.Code_THROTTLED, retryable: true},
	"InternalServiceError":             {code: delegatev1.Code_UNAVAILABLE, retryable: true},
	"InternalFailure":                  {code: delegatev1.Code_UNAVAILABLE, retryable: true},
	"ServiceUnavailable":               {code: delegatev1.Code_UNAVAILABLE, retryable: true},
	"ServiceUnavailableException":      {code: delegatev1.Code_UNAVAILABLE, retryable: true},
	"RequestTimeout":                   {code: delegatev1.Code_UNAVAILABLE, retryable: true},
	"RequestTimeoutException":          {code: delegatev1.Code_UNAVAILABLE, retryable: true},
	// Signing and credentials (any service), and STS.
	"UnrecognizedClientException":        {code: delegatev1.Code_CREDENTIALS},
	"InvalidSignatureException":          {code: delegatev1.Code_CREDENTIALS},
	"SignatureDoesNotMatch":              {code: delegatev1.Code_CREDENTIALS},
	"IncompleteSignature":                {code: delegatev1.Code_CREDENTIALS},
	"MissingAuthenticationToken":         {code: delegatev1.Code_CREDENTIALS},
	"InvalidClientTokenId":               {code: delegatev1.Code_CREDENTIALS},
	"ExpiredToken":                       {code: delegatev1.Code_CREDENTIALS},
	"ExpiredTokenException":              {code: delegatev1.Code_CREDENTIALS},
	"InvalidIdentityToken":               {code: delegatev1.Code_CREDENTIALS},
	"IDPCommunicationError":              {code: delegatev1.Code_CREDENTIALS, retryable: true},
	"IDPRejectedClaim":                   {code: delegatev1.Code_CREDENTIALS},
	"RegionDisabledException":            {code: delegatev1.Code_CREDENTIALS},
	"PackedPolicyTooLarge":               {code: delegatev1.Code_CREDENTIALS},
	"MalformedPolicyDocument":            {code: delegatev1.Code_CREDENTIALS},
	"AuthFailure":                        {code: delegatev1.Code_CREDENTIALS},
	"InvalidAccessKeyId":                 {code: delegatev1.Code_CREDENTIALS},
	"OptInRequired":                      {code: delegatev1.Code_CREDENTIALS},
	"NotAuthorized":                      {code: delegatev1.Code_CREDENTIALS},
	"UnauthorizedOperation":              {code: delegatev1.Code_ACCESS_DENIED},
	"AccessDeniedForDependencyException": {code: delegatev1.Code_ACCESS_DENIED},
}

// scheduledHint tells the caller how to get out of SCHEDULED_FOR_DELETION.
const scheduledHint = "restore it with `smd secret restore %s` or wait until the deletion date"

// call describes the failed call for messages: the task operation, the name
// the caller used, and the secrets sanitize must keep out of any AWS text.
type call struct {
	op      string
	name    string
	secrets []string
}

// translate maps err from a Secrets Manager call (or from the client pool)
// to a task *Error. The returned detail is the sanitized full error for the
// log; the *Error's message is safe to show: it names the AWS operation and
// the AWS error code (codes are not secret; a code that quotes task
// material is withheld), and quotes an AWS message only sanitized, and
// only for outcomes the table classifies.
func translate(ctx context.Context, c call, err error) (e *Error, detail string) {
	detail = sanitize(err.Error(), "(error text withheld: it quoted task material)", c.secrets...)
	e = classify(ctx, c, err)
	e.Op = c.op
	return e, detail
}

// awsErrorCode is the AWS error code of err as it may be shown (see
// safeCode), or "" when err carries none.
func awsErrorCode(c call, err error) string {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return ""
	}
	return safeCode(c, api.ErrorCode())
}

// codeWithheld stands for an AWS error code that may not be shown.
const codeWithheld = "(code withheld: it quoted task material)"

// plainCode is what an AWS error code looks like: ThrottlingException,
// InvalidAction, com.amazon.coral.service#UnknownOperationException.
var plainCode = regexp.MustCompile(`^[A-Za-z0-9._:#-]{1,128}$`)

// safeCode returns code if it may be shown: codes are not secret, but the
// code comes from the endpoint, which may be anything, so one that is not
// a plain name or that sanitize would change (it holds a value of the
// task, or looks like a key or token) is withheld.
func safeCode(c call, code string) string {
	if code == "" {
		return ""
	}
	if !plainCode.MatchString(code) || sanitize(code, "", c.secrets...) != code {
		return codeWithheld
	}
	return code
}

// httpStatus is the HTTP status of the response that produced err, or 0.
func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func classify(ctx context.Context, c call, err error) *Error {
	action := awsAction(err)
	var te *Error
	var fe *awsauth.FieldError
	var ce *awsauth.CredentialError
	switch {
	case errors.As(err, &te):
		return te
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return newError(delegatev1.Code_TIMEOUT, "the task's deadline passed during %s", action)
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return newError(delegatev1.Code_CANCELLED, "the task was cancelled during %s", action)
	case errors.As(err, &fe):
		code := delegatev1.Code_INVALID_ARGUMENT
		if errors.Is(fe, awsauth.ErrCredentials) {
			code = delegatev1.Code_CREDENTIALS
		}
		// FieldError messages name fields and rules; one that quotes the
		// SDK's configuration loader is sanitized like any SDK text.
		return newError(code, "%s", sanitize(fe.Error(), fe.Field+": invalid", c.secrets...))
	case errors.As(err, &ce):
		// Ahead of the table: an STS AccessDenied while assuming the role
		// is a credentials problem, not a Secrets Manager permission.
		inner := classifyAWS(c, ce.Err, "sts")
		return &Error{
			Code:      delegatev1.Code_CREDENTIALS,
			Retryable: inner != nil && inner.Retryable,
			Msg: fmt.Sprintf("could not obtain %s credentials for the connector: %s", ce.CredentialType,
				sanitize(rootMessage(ce.Err), "the credential provider failed", c.secrets...)),
		}
	}
	if e := classifyAWS(c, err, action); e != nil {
		return e
	}
	if code := awsErrorCode(c, err); code != "" {
		// An AWS answer the table does not know: name it, so that the
		// operator can tell what the endpoint said without the log.
		return newError(delegatev1.Code_INTERNAL, "%s failed with AWS error code %s%s, which smdelegate does not classify; the delegate's log has the detail",
			action, code, statusNote(httpStatus(err)))
	}
	return newError(delegatev1.Code_INTERNAL, "internal error during %s; the delegate's log has the detail", action)
}

func statusNote(status int) string {
	if status == 0 {
		return ""
	}
	return fmt.Sprintf(" (HTTP %d)", status)
}

// classifyAWS applies the table, then the HTTP status, then network
// failures. It returns nil for an error none of them explains.
func classifyAWS(c call, err error, action string) *Error {
	var api smithy.APIError
	errors.As(err, &api)
	if httpStatus(err) == 501 {
		// Not Implemented, whatever the code: an emulator answers 501
		// with InternalFailure, which would otherwise read as an outage.
		return awsMessage(c, awsClass{code: delegatev1.Code_UNSUPPORTED}, api, action, err)
	}
	if api != nil {
		if cl, ok := awsErrors[api.ErrorCode()]; ok {
			return awsMessage(c, cl, api, action, err)
		}
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		switch s := re.HTTPStatusCode(); {
		case s == 429:
			return awsMessage(c, awsClass{code: delegatev1.Code_THROTTLED, retryable: true}, api, action, err)
		case s >= 500:
			return awsMessage(c, awsClass{code: delegatev1.Code_UNAVAILABLE, retryable: true}, api, action, err)
		case s == 401 || s == 403:
			return awsMessage(c, awsClass{code: delegatev1.Code_CREDENTIALS}, api, action, err)
		}
	}
	var se *smithyhttp.RequestSendError
	var ne net.Error
	if errors.As(err, &se) || errors.As(err, &ne) {
		return &Error{Code: delegatev1.Code_UNAVAILABLE, Retryable: true,
			Msg: fmt.Sprintf("AWS could not be reached for %s%s; retry later", action, attemptNote(attempts(err)))}
	}
	return nil
}

// awsMessage builds the safe message for a classified AWS error; err is
// the whole error, for the attempts the SDK made and the HTTP status.
func awsMessage(c call, cl awsClass, api smithy.APIError, action string, err error) *Error {
	n := attempts(err)
	e := &Error{Code: cl.code, Retryable: cl.retryable}
	code, msg := "", ""
	if api != nil {
		// The code may not be one of the table's (classified by HTTP
		// status), so it is shown only as safeCode allows.
		code = safeCode(c, api.ErrorCode())
		msg = sanitize(api.ErrorMessage(), "", c.secrets...)
	}
	quoted := func() string {
		if msg == "" {
			return code
		}
		return code + ": " + msg
	}
	subject := "the secret"
	if c.name != "" {
		subject = fmt.Sprintf("secret %q", c.name)
	}
	switch cl.code {
	case delegatev1.Code_NOT_FOUND:
		e.Msg = subject + " not found"
	case delegatev1.Code_ALREADY_EXISTS:
		e.Msg = subject + " already exists"
	case delegatev1.Code_INVALID_ARGUMENT:
		if code == "InvalidRequestException" && scheduledForDeletion(api.ErrorMessage()) {
			e.Code = delegatev1.Code_SCHEDULED_FOR_DELETION
			name := c.name
			if name == "" {
				name = "NAME"
			}
			e.Msg = subject + " is scheduled for deletion: " + fmt.Sprintf(scheduledHint, name)
		} else {
			e.Msg = fmt.Sprintf("AWS rejected %s: %s", action, quoted())
		}
	case delegatev1.Code_ACCESS_DENIED:
		e.Msg = fmt.Sprintf("access denied: the connector's identity needs %s", iamActions(action, code))
	case delegatev1.Code_THROTTLED:
		e.Msg = fmt.Sprintf("AWS throttled %s%s; retry later", action, attemptNote(n))
	case delegatev1.Code_UNAVAILABLE:
		e.Msg = fmt.Sprintf("AWS is unavailable for %s%s (%s); retry later", action, attemptNote(n), quoted())
	case delegatev1.Code_CREDENTIALS:
		e.Msg = fmt.Sprintf("AWS rejected the connector's credentials on %s: %s", action, quoted())
	case delegatev1.Code_UNSUPPORTED:
		// Code and status only: the endpoint is not AWS as the table
		// knows it, and what its message quotes is unknown.
		answered := code
		if answered == "" {
			answered = "no error code"
		}
		e.Msg = fmt.Sprintf("the endpoint does not support %s: it answered %s%s; a third-party emulator, a VPC endpoint or a region may not implement this operation (check the connector's endpoint_url and region)",
			action, answered, statusNote(httpStatus(err)))
	default:
		e.Msg = fmt.Sprintf("%s failed: %s", action, quoted())
	}
	return e
}

func scheduledForDeletion(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "marked for deletion") || strings.Contains(m, "scheduled for deletion") ||
		strings.Contains(m, "marked deleted")
}

// iamActions names the permissions a denied call needs.
func iamActions(action, code string) string {
	switch {
	case code == "DecryptionFailure":
		return "kms:Decrypt on the secret's KMS key"
	case code == "EncryptionFailure":
		return "kms:GenerateDataKey on the secret's KMS key"
	case action == "secretsmanager:GetSecretValue":
		return action + " (and kms:Decrypt when the secret uses a customer managed KMS key)"
	case action == "secretsmanager:CreateSecret":
		return action + " and secretsmanager:TagResource (every create tags the secret as managed; and kms:GenerateDataKey when the secret uses a customer managed KMS key)"
	case action == "secretsmanager:PutSecretValue", action == "secretsmanager:UpdateSecret":
		return action + " (and kms:GenerateDataKey when the secret uses a customer managed KMS key)"
	case action == "secretsmanager:DescribeSecret":
		return action + " (also before every change: smdelegate checks the secret's managed-by tag)"
	}
	return action
}

// awsAction names the IAM action of the failed call, from the SDK's
// operation error: "secretsmanager:GetSecretValue".
func awsAction(err error) string {
	var oe *smithy.OperationError
	if errors.As(err, &oe) && oe.OperationName != "" {
		svc := strings.ToLower(strings.ReplaceAll(oe.ServiceID, " ", ""))
		if svc == "" {
			svc = "secretsmanager"
		}
		return svc + ":" + oe.OperationName
	}
	return "the AWS call"
}

// attempts is how many attempts the SDK made, when it gave up on retrying.
func attempts(err error) int {
	var me *retry.MaxAttemptsError
	if errors.As(err, &me) {
		return me.Attempt
	}
	return 0
}

func attemptNote(n int) string {
	if n > 1 {
		return fmt.Sprintf(" after %d attempts", n)
	}
	return ""
}

// rootMessage is the most useful text of a credential provider failure: the
// AWS code and message when an AWS service answered, else the error chain.
func rootMessage(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode() + ": " + api.ErrorMessage()
	}
	return err.Error()
}
