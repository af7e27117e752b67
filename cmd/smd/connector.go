package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// scopeFlag is --scope account[/org[/project]] (default: the default account).
func scopeFlag(cmd *cobra.Command, v *string) {
	cmd.Flags().StringVar(v, "scope", "", "scope: account, account/org or account/org/project (env SMD_SCOPE; default: default)")
}

func parseScope(cmd *cobra.Command, v string) (*delegatev1.Scope, error) {
	if !cmd.Flags().Changed("scope") {
		v = os.Getenv("SMD_SCOPE")
	}
	if v == "" {
		return nil, nil
	}
	s, err := connector.ParseScope(v)
	if err != nil {
		return nil, usageErr(fmt.Errorf("--scope: %w", err))
	}
	return s, nil
}

// readConnectorFile reads a connector YAML file (see
// configs/connector.example.yaml): the fields of delegate.v1.Connector by
// their snake_case names, enums in any case, scope as a mapping or as
// "account/org/project".
func readConnectorFile(path string) (*delegatev1.Connector, error) {
	if path == "" {
		return nil, usageErr(fmt.Errorf("-f: a connector file is required"))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usageErr(fmt.Errorf("-f: %w", err))
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, usageErr(fmt.Errorf("%s: %w", path, err))
	}
	if m == nil {
		// Empty, only comments or a null document: protojson would say
		// "unexpected token null".
		return nil, usageErr(fmt.Errorf("%s: the file is empty: it holds no connector (see configs/connector.example.yaml)", path))
	}
	// Enums are checked here so the error names the field as the file
	// does (protojson would say "enum field credentialType") and the
	// values allowed.
	for _, e := range []struct {
		field, rule string
		values      map[string]int32
	}{
		{"credential_type", "must be access_key, instance_role, assume_role or oidc", delegatev1.CredentialType_value},
		{"oidc_connectivity", "must be delegate or platform", delegatev1.OIDCConnectivity_value},
	} {
		if v, ok := m[e.field].(string); ok {
			v = strings.ToUpper(strings.TrimSpace(v))
			if n, ok := e.values[v]; !ok || n == 0 {
				return nil, usageErr(fmt.Errorf("%s: %s: %s", path, e.field, e.rule))
			}
			m[e.field] = v
		}
	}
	if v, ok := m["scope"].(string); ok {
		sc, err := connector.ParseScope(v)
		if err != nil {
			return nil, usageErr(fmt.Errorf("%s: scope: %w", path, err))
		}
		m["scope"] = map[string]any{"account": sc.GetAccount(), "org": sc.GetOrg(), "project": sc.GetProject()}
	}
	c := &delegatev1.Connector{}
	if err := fromYAML(c.ProtoReflect(), m, ""); err != nil {
		return nil, usageErr(fmt.Errorf("%s: %w", path, err))
	}
	return c, nil
}

func newConnectorCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "connector", Short: "Manage AWS Secrets Manager connectors"}
	cf.register(cmd)

	var file string
	write := func(update bool) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			c, err := readConnectorFile(file)
			if err != nil {
				return err
			}
			_, err = call(cmd, &cf, func(ctx context.Context, cl delegatev1.ManagerServiceClient) (*delegatev1.Connector, error) {
				if update {
					return cl.UpdateConnector(ctx, &delegatev1.UpdateConnectorRequest{Connector: c})
				}
				return cl.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: c})
			}, func(w io.Writer, out *delegatev1.Connector) error {
				verb := "created"
				if update {
					verb = "updated"
				}
				fmt.Fprintf(w, "connector %s %s in scope %s\n", out.GetIdentifier(), verb, connector.ScopeKey(out.GetScope()))
				return nil
			})
			return err
		}
	}
	create := &cobra.Command{Use: "create -f FILE", Short: "Register a connector from a YAML file", Args: cobra.NoArgs, RunE: write(false)}
	create.Flags().StringVarP(&file, "file", "f", "", "connector YAML file (see configs/connector.example.yaml)")
	update := &cobra.Command{Use: "update -f FILE", Short: "Replace a connector from a YAML file", Args: cobra.NoArgs, RunE: write(true)}
	update.Flags().StringVarP(&file, "file", "f", "", "connector YAML file")

	var scope string
	// ref is the connector ID names in --scope; the ID is checked after
	// the client flags, as the manager would check it.
	ref := func(sc *delegatev1.Scope, id string) (*delegatev1.ConnectorRef, error) {
		if err := connector.ValidateIdentifier("ID", id, true); err != nil {
			return nil, usageErr(err)
		}
		return &delegatev1.ConnectorRef{Scope: sc, Identifier: id}, nil
	}
	get := &cobra.Command{
		Use: "get ID", Short: "Show a connector", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sc, err := parseScope(cmd, scope)
			if err != nil {
				return err
			}
			_, err = call(cmd, &cf, func(ctx context.Context, cl delegatev1.ManagerServiceClient) (*delegatev1.Connector, error) {
				r, err := ref(sc, args[0])
				if err != nil {
					return nil, err
				}
				return cl.GetConnector(ctx, &delegatev1.GetConnectorRequest{Ref: r})
			}, func(w io.Writer, c *delegatev1.Connector) error {
				if err := printConnectors(w, c); err != nil {
					return err
				}
				return printBindings(w, c)
			})
			return err
		},
	}
	scopeFlag(get, &scope)
	list := &cobra.Command{
		Use: "list", Short: "List connectors visible from a scope", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sc, err := parseScope(cmd, scope)
			if err != nil {
				return err
			}
			_, err = call(cmd, &cf, func(ctx context.Context, cl delegatev1.ManagerServiceClient) (*delegatev1.ListConnectorsResponse, error) {
				return cl.ListConnectors(ctx, &delegatev1.ListConnectorsRequest{Scope: sc})
			}, func(w io.Writer, resp *delegatev1.ListConnectorsResponse) error {
				return printConnectors(w, resp.GetConnectors()...)
			})
			return err
		},
	}
	scopeFlag(list, &scope)
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete a connector", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sc, err := parseScope(cmd, scope)
			if err != nil {
				return err
			}
			_, err = call(cmd, &cf, func(ctx context.Context, cl delegatev1.ManagerServiceClient) (*delegatev1.DeleteConnectorResponse, error) {
				r, err := ref(sc, args[0])
				if err != nil {
					return nil, err
				}
				return cl.DeleteConnector(ctx, &delegatev1.DeleteConnectorRequest{Ref: r})
			}, func(w io.Writer, _ *delegatev1.DeleteConnectorResponse) error {
				fmt.Fprintf(w, "connector %s deleted\n", args[0])
				return nil
			})
			return err
		},
	}
	scopeFlag(del, &scope)
	test := &cobra.Command{
		Use: "test [ID]", Short: "Test a connector's access to AWS Secrets Manager from a delegate", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sc, err := parseScope(cmd, scope)
			if err != nil {
				return err
			}
			info, err := call(cmd, &cf, func(ctx context.Context, cl delegatev1.ManagerServiceClient) (*delegatev1.TaskInfo, error) {
				r := &delegatev1.ConnectorRef{Scope: sc}
				if len(args) == 1 {
					var err error
					if r, err = ref(sc, args[0]); err != nil {
						return nil, err
					}
				}
				return defaultRetry.send(ctx, cmd.ErrOrStderr(), func(ctx context.Context) (*delegatev1.TaskInfo, error) {
					return cl.TestConnector(ctx, &delegatev1.TestConnectorRequest{Ref: r})
				})
			}, func(w io.Writer, info *delegatev1.TaskInfo) error {
				rows := [][]string{}
				for _, c := range info.GetOutcome().GetSecret().GetChecks() {
					res := "ok"
					if !c.GetOk() {
						res = "FAILED"
					}
					rows = append(rows, []string{c.GetAction(), res, c.GetMessage()})
				}
				if len(rows) > 0 {
					table(w, []string{"ACTION", "RESULT", "DETAIL"}, rows)
				}
				if info.GetOutcome().GetCode() == delegatev1.Code_OK {
					fmt.Fprintf(w, "connection test passed on delegate %s\n", info.GetDelegate())
				}
				return nil
			})
			if err != nil {
				return err
			}
			return taskErr(info)
		},
	}
	scopeFlag(test, &scope)
	cmd.AddCommand(create, update, get, list, del, test)
	return cmd
}

func printConnectors(w io.Writer, cs ...*delegatev1.Connector) error {
	rows := [][]string{}
	for _, c := range cs {
		def := ""
		if c.GetDefault() {
			def = "yes"
		}
		rows = append(rows, []string{c.GetIdentifier(), connector.ScopeKey(c.GetScope()), c.GetName(),
			strings.ToLower(c.GetCredentialType().String()), orDash(c.GetRegion()), orDash(c.GetSecretNamePrefix()),
			orDash(strings.Join(c.GetDelegateSelectors(), ",")), orDash(def)})
	}
	return table(w, []string{"IDENTIFIER", "SCOPE", "NAME", "CREDENTIALS", "REGION", "PREFIX", "SELECTORS", "DEFAULT"}, rows)
}

// printBindings shows where each builtin:NAME reference of c points: the
// credential of that name in the scope the manager bound it to.
func printBindings(w io.Writer, c *delegatev1.Connector) error {
	if len(c.GetCredentialBindings()) == 0 {
		return nil
	}
	rows := [][]string{}
	for _, b := range c.GetCredentialBindings() {
		rows = append(rows, []string{b.GetField(), "builtin:" + b.GetName(), connector.ScopeKey(b.GetScope())})
	}
	fmt.Fprintln(w)
	return table(w, []string{"FIELD", "REFERENCE", "BOUND TO SCOPE"}, rows)
}
