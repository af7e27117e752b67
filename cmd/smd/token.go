package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/connector"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Make tokens and their hashes for manager.yaml"}
	var kind, name, scope string
	gen := &cobra.Command{
		Use:   "generate",
		Short: "Print a new random token and the config entry holding its hash",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kind != "delegate" && kind != "operator" {
				return usageErr(fmt.Errorf("--kind: must be delegate or operator (got %q)", kind))
			}
			scopeLine := ""
			if scope != "" {
				sc, err := connector.ParseScope(scope)
				if err != nil {
					return usageErr(fmt.Errorf("--scope: %w", err))
				}
				scopeLine = "    scope: " + connector.ScopeKey(sc) + "\n"
			}
			b := make([]byte, 32)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			tok := "smd" + kind[:1] + "_" + base64.RawURLEncoding.EncodeToString(b)
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "token: %s\n\n# add to manager.yaml under auth.%s_tokens:\n  - name: %s\n    sha256: %s\n%s",
				tok, kind, name, manager.HashToken(tok), scopeLine)
			return nil
		},
	}
	gen.Flags().StringVar(&kind, "kind", "delegate", "delegate or operator")
	gen.Flags().StringVar(&name, "name", "default", "name of the token in logs")
	gen.Flags().StringVar(&scope, "scope", "", "confine the token to account, account/org or account/org/project (default: unrestricted)")

	hash := &cobra.Command{
		Use:   "hash",
		Short: "Read a token on stdin and print its SHA-256 for manager.yaml",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			line = strings.TrimSpace(line)
			if line == "" {
				return usageErr(fmt.Errorf("stdin: expected a token (%v)", err))
			}
			fmt.Fprintln(cmd.OutOrStdout(), manager.HashToken(line))
			return nil
		},
	}
	cmd.AddCommand(gen, hash)
	return cmd
}
