package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

func newCredentialCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "credential", Short: "Manage builtin credentials (encrypted by the manager; use as builtin:NAME)"}
	cf.register(cmd)
	var scope, valueFile string
	put := &cobra.Command{
		Use: "put NAME", Short: "Store a credential (value from --value-file or stdin, never the command line)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sc, err := parseScope(cmd, scope)
			if err != nil {
				return err
			}
			if err := connector.ValidateCredentialName("NAME", args[0]); err != nil {
				return usageErr(err)
			}
			v, err := readValue(cmd, valueFile, true, false)
			if err != nil {
				return err
			}
			_, err = call(cmd, &cf, func(ctx context.Context, cl delegatev1.ManagerServiceClient) (*delegatev1.Credential, error) {
				return cl.PutCredential(ctx, &delegatev1.PutCredentialRequest{Scope: sc, Name: args[0], Value: []byte(v.GetStringValue())})
			}, func(w io.Writer, c *delegatev1.Credential) error {
				fmt.Fprintf(w, "credential %s stored in scope %s; reference it as builtin:%s\n", c.GetName(), connector.ScopeKey(c.GetScope()), c.GetName())
				return nil
			})
			return err
		},
	}
	put.Flags().StringVar(&valueFile, "value-file", "", "read the value from this file (- for stdin)")
	scopeFlag(put, &scope)
	list := &cobra.Command{
		Use: "list", Short: "List credentials (names only)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sc, err := parseScope(cmd, scope)
			if err != nil {
				return err
			}
			_, err = call(cmd, &cf, func(ctx context.Context, cl delegatev1.ManagerServiceClient) (*delegatev1.ListCredentialsResponse, error) {
				return cl.ListCredentials(ctx, &delegatev1.ListCredentialsRequest{Scope: sc})
			}, func(w io.Writer, resp *delegatev1.ListCredentialsResponse) error {
				rows := [][]string{}
				for _, c := range resp.GetCredentials() {
					rows = append(rows, []string{c.GetName(), connector.ScopeKey(c.GetScope()), ago(c.GetUpdatedAt())})
				}
				return table(w, []string{"NAME", "SCOPE", "UPDATED"}, rows)
			})
			return err
		},
	}
	scopeFlag(list, &scope)
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete a credential", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sc, err := parseScope(cmd, scope)
			if err != nil {
				return err
			}
			if err := connector.ValidateCredentialName("NAME", args[0]); err != nil {
				return usageErr(err)
			}
			// Printed as text whatever -o says (the response is empty).
			if _, err := dialCall(cmd, &cf, func(ctx context.Context, cl delegatev1.ManagerServiceClient) (*delegatev1.DeleteCredentialResponse, error) {
				return cl.DeleteCredential(ctx, &delegatev1.DeleteCredentialRequest{Scope: sc, Name: args[0]})
			}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "credential %s deleted\n", args[0])
			return nil
		},
	}
	scopeFlag(del, &scope)
	cmd.AddCommand(put, list, del)
	return cmd
}

func newMasterKeyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "master-key", Short: "Make the manager's master key"}
	cmd.AddCommand(&cobra.Command{
		Use:   "generate",
		Short: "Print a new random master key (base64) for master_key_file or SMD_MASTER_KEY",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), seal.GenerateKey())
			return nil
		},
	})
	return cmd
}
