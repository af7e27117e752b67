package dispatch

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestIssue10NoGRPCStatusInDispatch: the dispatcher returns domain errors
// (LimitError, StreamClosedError, TaskError, ...); the API
// (manager/api/errors.go, its interceptor RateLimit) and the Connect
// handler (manager/stream) are the only places that turn them into gRPC
// status. No source file of the package imports gRPC at all.
func TestIssue10NoGRPCStatusInDispatch(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if path == "google.golang.org/grpc" || strings.HasPrefix(path, "google.golang.org/grpc/") {
				t.Errorf("%s imports %s: return a domain error, translated to gRPC in manager/api/errors.go or manager/stream", name, path)
			}
		}
	}
}
