package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// secretFlags are the flags every secret command shares.
type secretFlags struct {
	connector string
	scope     string
	wait      bool
}

func (f *secretFlags) register(cmd *cobra.Command, mutation bool) {
	cmd.Flags().StringVar(&f.connector, "connector", "", "connector identifier (default: the scope's default connector)")
	scopeFlag(cmd, &f.scope)
	if mutation {
		cmd.Flags().BoolVar(&f.wait, "wait", false, "wait for the change to complete and print its result (default: print the task id)")
	}
}

// readValue reads a secret value from --value-file, or from stdin when it
// is not a terminal. Values never come from the command line.
func readValue(cmd *cobra.Command, file string, required bool) (*delegatev1.SecretValue, error) {
	var r io.Reader
	switch {
	case file == "-":
		r = cmd.InOrStdin()
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return nil, usageErr(fmt.Errorf("--value-file: %w", err))
		}
		defer f.Close()
		r = f
	default:
		in := cmd.InOrStdin()
		if f, ok := in.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			if required {
				return nil, usageErr(fmt.Errorf("value: give it with --value-file FILE or on stdin (never on the command line)"))
			}
			return nil, nil
		}
		r = in
	}
	b, err := io.ReadAll(io.LimitReader(r, 65537))
	if err != nil {
		return nil, fmt.Errorf("read value: %w", err)
	}
	if len(b) == 0 {
		if required {
			return nil, usageErr(fmt.Errorf("value: must not be empty"))
		}
		return nil, nil
	}
	return &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: string(b)}}, nil
}

func parseTags(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErr(fmt.Errorf("--tag: want key=value, got %q", kv))
		}
		out[k] = v
	}
	return out, nil
}

func newSecretCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "secret", Short: "Run secret operations through a connector"}
	cf.register(cmd)

	run := func(cmd *cobra.Command, sf *secretFlags, req *delegatev1.SecretRequest, show func(io.Writer, *delegatev1.SecretResult)) error {
		sc, err := parseScope(cmd, sf.scope)
		if err != nil {
			return err
		}
		req.Connector = &delegatev1.ConnectorRef{Scope: sc, Identifier: sf.connector}
		mutation := req.GetGet() == nil && req.GetList() == nil && req.GetDescribe() == nil
		req.Async = mutation && !sf.wait
		cl, ctx, done, err := cf.managerClient(cmd)
		if err != nil {
			return err
		}
		defer done()
		info, err := cl.Secret(ctx, req)
		if err != nil {
			return apiErr(err)
		}
		w := cmd.OutOrStdout()
		if cf.output == "json" {
			if err := printJSON(w, info); err != nil {
				return err
			}
			return taskErr(info)
		}
		if req.Async {
			fmt.Fprintf(w, "task %s queued (smd task watch %s)\n", info.GetId(), info.GetId())
			return nil
		}
		if info.GetOutcome().GetCode() == delegatev1.Code_OK {
			show(w, info.GetOutcome().GetSecret())
		}
		return taskErr(info)
	}

	var (
		sf                secretFlags
		valueFile, desc   string
		tags              []string
		versionID, stage  string
		force             bool
		window            int32
		prefix, nextToken string
		maxResults        int32
		planned           bool
	)
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a secret (value from --value-file or stdin)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := readValue(cmd, valueFile, true)
			if err != nil {
				return err
			}
			t, err := parseTags(tags)
			if err != nil {
				return err
			}
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{
				Name: args[0], Value: v, Description: desc, Tags: t}}}, showChange("created"))
		},
	}
	upsert := &cobra.Command{
		Use: "upsert NAME", Short: "Create a secret, or update it if it exists", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := readValue(cmd, valueFile, true)
			if err != nil {
				return err
			}
			t, err := parseTags(tags)
			if err != nil {
				return err
			}
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Upsert{Upsert: &delegatev1.UpsertSecretOp{
				Name: args[0], Value: v, Description: desc, Tags: t}}}, func(w io.Writer, r *delegatev1.SecretResult) {
				verb := "updated"
				if r.GetCreated() {
					verb = "created"
				}
				showChange(verb)(w, r)
			})
		},
	}
	update := &cobra.Command{
		Use: "update NAME", Short: "Write a new value (and/or description) of a secret", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := readValue(cmd, valueFile, desc == "")
			if err != nil {
				return err
			}
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Update{Update: &delegatev1.UpdateSecretOp{
				Name: args[0], Value: v, Description: desc}}}, showChange("updated"))
		},
	}
	for _, c := range []*cobra.Command{create, upsert, update} {
		c.Flags().StringVar(&valueFile, "value-file", "", "read the value from this file (- for stdin)")
		c.Flags().StringVar(&desc, "description", "", "description")
		sf.register(c, true)
	}
	for _, c := range []*cobra.Command{create, upsert} {
		c.Flags().StringArrayVar(&tags, "tag", nil, "tag key=value (repeatable)")
	}
	get := &cobra.Command{
		Use: "get NAME[#key]", Short: "Print a secret's value (or one JSON key of it)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Get{Get: &delegatev1.GetSecretOp{
				Name: args[0], VersionId: versionID, VersionStage: stage}}}, func(w io.Writer, r *delegatev1.SecretResult) {
				switch v := r.GetValue().GetValue().(type) {
				case *delegatev1.SecretValue_StringValue:
					fmt.Fprintln(w, v.StringValue)
				case *delegatev1.SecretValue_BinaryValue:
					w.Write(v.BinaryValue)
				}
			})
		},
	}
	get.Flags().StringVar(&versionID, "version-id", "", "a version id")
	get.Flags().StringVar(&stage, "version-stage", "", "a version stage (default AWSCURRENT)")
	sf.register(get, false)
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete a secret (recovery window, or --force)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			op := &delegatev1.DeleteSecretOp{Name: args[0], RecoveryWindowDays: window}
			if cmd.Flags().Changed("force") {
				op.ForceDeleteWithoutRecovery = &force
			}
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Delete{Delete: op}},
				func(w io.Writer, r *delegatev1.SecretResult) {
					if d := r.GetDeletionDate(); d != nil {
						fmt.Fprintf(w, "deleted %s; recoverable until %s (smd secret restore %s)\n", r.GetName(), d.AsTime().Format("2006-01-02 15:04 MST"), r.GetName())
					} else {
						fmt.Fprintf(w, "deleted %s without recovery\n", r.GetName())
					}
				})
		},
	}
	del.Flags().BoolVar(&force, "force", false, "delete at once, without recovery")
	del.Flags().Int32Var(&window, "recovery-window-days", 0, "days the secret stays recoverable (7-30; default the connector's)")
	sf.register(del, true)
	restore := &cobra.Command{
		Use: "restore NAME", Short: "Cancel a scheduled deletion", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Restore{Restore: &delegatev1.RestoreSecretOp{Name: args[0]}}},
				func(w io.Writer, r *delegatev1.SecretResult) { fmt.Fprintf(w, "restored %s\n", r.GetName()) })
		},
	}
	sf.register(restore, true)
	list := &cobra.Command{
		Use: "list", Short: "List secrets under the connector's prefix", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_List{List: &delegatev1.ListSecretsOp{
				NamePrefix: prefix, MaxResults: maxResults, NextToken: nextToken, IncludePlannedDeletion: planned}}},
				func(w io.Writer, r *delegatev1.SecretResult) {
					rows := [][]string{}
					for _, m := range r.GetSecrets() {
						changed, deleted := "-", "-"
						if t := m.GetLastChangedDate(); t != nil {
							changed = t.AsTime().Format("2006-01-02 15:04")
						}
						if t := m.GetDeletedDate(); t != nil {
							deleted = t.AsTime().Format("2006-01-02 15:04")
						}
						rows = append(rows, []string{m.GetName(), orDash(m.GetDescription()), changed, deleted})
					}
					table(w, []string{"NAME", "DESCRIPTION", "CHANGED", "DELETED"}, rows)
					if r.GetNextToken() != "" {
						fmt.Fprintf(w, "more: --next-token %s\n", r.GetNextToken())
					}
				})
		},
	}
	list.Flags().StringVar(&prefix, "prefix", "", "only names starting with this (under the connector's prefix)")
	list.Flags().Int32Var(&maxResults, "max-results", 0, "page size, 1-100")
	list.Flags().StringVar(&nextToken, "next-token", "", "continue a previous listing")
	list.Flags().BoolVar(&planned, "include-planned-deletion", false, "include secrets scheduled for deletion")
	sf.register(list, false)
	describe := &cobra.Command{
		Use: "describe NAME", Short: "Show a secret's metadata (never its value)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Describe{Describe: &delegatev1.DescribeSecretOp{Name: args[0]}}},
				func(w io.Writer, r *delegatev1.SecretResult) {
					m := r.GetMeta()
					rows := [][]string{{"name", m.GetName()}, {"arn", m.GetArn()}, {"description", orDash(m.GetDescription())}}
					if t := m.GetDeletedDate(); t != nil {
						rows = append(rows, []string{"deleted", t.AsTime().Format("2006-01-02 15:04 MST")})
					}
					for id, st := range m.GetVersionStages() {
						rows = append(rows, []string{"version " + id, strings.Join(st.GetStages(), ",")})
					}
					table(w, []string{"FIELD", "VALUE"}, rows)
				})
		},
	}
	sf.register(describe, false)
	cmd.AddCommand(create, upsert, get, update, del, restore, list, describe)
	return cmd
}

func showChange(verb string) func(io.Writer, *delegatev1.SecretResult) {
	return func(w io.Writer, r *delegatev1.SecretResult) {
		if r.GetVersionId() != "" {
			fmt.Fprintf(w, "%s %s (version %s)\n", verb, r.GetName(), r.GetVersionId())
			return
		}
		fmt.Fprintf(w, "%s %s\n", verb, r.GetName())
	}
}
