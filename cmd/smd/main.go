// Command smd is the smdelegate binary: the manager, the agent (delegate)
// and the operator CLI.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

func main() {
	root := newRoot()
	err := root.Execute()
	os.Exit(exitCode(err))
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "smd",
		Short:         "smdelegate: a delegate for AWS Secrets Manager",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErr(fmt.Errorf("%w (see %s --help)", err, c.CommandPath()))
	})
	root.AddCommand(
		newDevCmd(),
		newManagerCmd(),
		newAgentCmd(),
		newVersionCmd(),
		newDelegateCmd(),
		newTaskCmd(),
		newTokenCmd(),
		newConnectorCmd(),
		newSecretCmd(),
		newCredentialCmd(),
		newMasterKeyCmd(),
	)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "smd", Version)
			return nil
		},
	}
}

// Exit codes, documented in the README.
const (
	exitOK          = 0
	exitError       = 1 // anything else
	exitInvalid     = 2 // invalid input: flags, arguments, config, validation
	exitNotFound    = 3
	exitUnavailable = 4   // manager unreachable, no eligible delegate, timeout
	exitDenied      = 5   // token refused or not allowed
	exitTaskFailed  = 6   // the task ran and failed (its code is in the output)
	exitInterrupted = 130 // the third signal
)

// codedError carries an exit code.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func usageErr(err error) error { return &codedError{exitInvalid, err} }

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(os.Stderr, "smd:", err)
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	return exitError
}
