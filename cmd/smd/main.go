// Command smd is the smdelegate binary: the manager, the agent (delegate)
// and the operator CLI.
package main

import (
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
		newClusterCmd(),
		newTaskCmd(),
		newTokenCmd(),
		newConnectorCmd(),
		newSecretCmd(),
		newCredentialCmd(),
		newMasterKeyCmd(),
	)
	strictArgs(root)
	return root
}

// strictArgs makes mistakes in arguments exit 2 (invalid input) like
// mistakes in flags, and refuses arguments and flag values that are not
// UTF-8 (checkText). Left to cobra, a wrong number of arguments and
// "smd bogus" exit 1, and "smd connector bogus" prints the group's help and
// exits 0, so a script with a typo would carry on as if it had worked.
func strictArgs(c *cobra.Command) {
	if c.HasSubCommands() && !c.Runnable() {
		// A command group: no arguments of its own; with none it prints
		// its help, as cobra does.
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				hint := ""
				if cmd.SuggestionsMinimumDistance <= 0 {
					cmd.SuggestionsMinimumDistance = 2 // cobra's default
				}
				if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
					hint = fmt.Sprintf("; did you mean %q?", s[0])
				}
				return usageErr(fmt.Errorf("unknown command %q for %q%s (see %s --help)", args[0], cmd.CommandPath(), hint, cmd.CommandPath()))
			}
			return cmd.Help()
		}
	} else if c.Runnable() {
		check := c.Args
		c.Args = func(cmd *cobra.Command, args []string) error {
			if check != nil {
				if err := check(cmd, args); err != nil {
					return usageErr(fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath()))
				}
			}
			return checkText(cmd, args)
		}
	}
	for _, sub := range c.Commands() {
		strictArgs(sub)
	}
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
