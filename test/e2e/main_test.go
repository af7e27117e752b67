package e2e

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/smdelegate/smdelegate/internal/harness"
)

// smdBin is the smd binary built by TestMain.
var smdBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped with -short")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "smd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := 1
	if smdBin, err = buildSmd(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build smd:", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildSmd builds ./cmd/smd of the module this test lives in into dir
// (with the race detector when SMD_E2E_RACE=1).
func buildSmd(dir string) (string, error) {
	var flags []string
	if os.Getenv("SMD_E2E_RACE") == "1" {
		flags = append(flags, "-race")
	}
	return harness.BuildSmd(dir, nil, flags...)
}
