package api

import (
	"testing"

	"google.golang.org/grpc/codes"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestIssue10GRPCCodeCoversEveryCode: GRPCCode, the one table from outcome
// codes to gRPC codes, has an entry for every value of the Code enum (read
// from its descriptor, so a new code without one fails): only INTERNAL
// may become Internal, and UNSUPPORTED is Unimplemented.
func TestIssue10GRPCCodeCoversEveryCode(t *testing.T) {
	t.Parallel()
	values := delegatev1.Code(0).Descriptor().Values()
	for i := range values.Len() {
		c := delegatev1.Code(values.Get(i).Number())
		got := GRPCCode(c)
		if got == codes.Internal && c != delegatev1.Code_INTERNAL {
			t.Errorf("GRPCCode(%v) = Internal: the code has no entry in the table", c)
		}
	}
	if got := GRPCCode(delegatev1.Code_UNSUPPORTED); got != codes.Unimplemented {
		t.Errorf("GRPCCode(UNSUPPORTED) = %v, want Unimplemented", got)
	}
}
