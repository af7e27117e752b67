package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// secretFlags are the flags every secret command shares.
type secretFlags struct {
	connector string
	scope     string
	wait      bool
	requestID string
}

func (f *secretFlags) register(cmd *cobra.Command, mutation bool) {
	cmd.Flags().StringVar(&f.connector, "connector", "", "connector identifier (default: the scope's default connector)")
	scopeFlag(cmd, &f.scope)
	if mutation {
		cmd.Flags().BoolVar(&f.wait, "wait", false, "wait for the change to complete and print its result (default: print the task id)")
		requestIDFlag(cmd, &f.requestID)
	}
}

// requestIDFlag registers --request-id on a command that submits a task.
func requestIDFlag(cmd *cobra.Command, v *string) {
	cmd.Flags().StringVar(v, "request-id", "", "idempotency key: the same command with the same id gets the task the first one made, never a second (1-128 of A-Z a-z 0-9 _ . : -; default: a new one per invocation, printed when smd retries)")
}

const timeLayout = "2006-01-02 15:04"

func newSecretCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "secret", Short: "Run secret operations through a connector"}
	cf.register(cmd)

	// run sends req; wait forces waiting for a change (--show).
	run := func(cmd *cobra.Command, sf *secretFlags, req *delegatev1.SecretRequest, wait bool, printResult func(io.Writer, *delegatev1.SecretResult)) error {
		sc, err := parseScope(cmd, sf.scope)
		if err != nil {
			return err
		}
		if err := connector.ValidateIdentifier("--connector", sf.connector, false); err != nil {
			return usageErr(err)
		}
		if err := checkSecret(req); err != nil {
			return err
		}
		req.Connector = &delegatev1.ConnectorRef{Scope: sc, Identifier: sf.connector}
		mutation := req.GetGet() == nil && req.GetList() == nil && req.GetDescribe() == nil && req.GetVersions() == nil
		req.Async = mutation && !sf.wait && !wait
		info, err := call(cmd, &cf, func(ctx context.Context, cl delegatev1.ManagerServiceClient) (*delegatev1.TaskInfo, error) {
			if mutation {
				// A change carries a request id and is retried under it
				// when its fate is unknown: it is made once, whatever
				// happens to the connection or the manager.
				req.RequestId = sf.requestID
				if req.RequestId == "" {
					req.RequestId = newRequestID()
				}
				return defaultRetry.submit(ctx, cmd.ErrOrStderr(), req.RequestId, !req.Async, func(ctx context.Context) (*delegatev1.TaskInfo, error) {
					return cl.Secret(ctx, req)
				})
			}
			return defaultRetry.send(ctx, cmd.ErrOrStderr(), func(ctx context.Context) (*delegatev1.TaskInfo, error) {
				return cl.Secret(ctx, req)
			})
		}, func(w io.Writer, info *delegatev1.TaskInfo) error {
			if req.Async {
				fmt.Fprintf(w, "task %s queued (smd task watch %s)\n", info.GetId(), info.GetId())
			} else if info.GetOutcome().GetCode() == delegatev1.Code_OK {
				printResult(w, info.GetOutcome().GetSecret())
			}
			return nil
		})
		if err != nil {
			return err
		}
		if req.Async && cf.output != "json" {
			return nil // queued: the text says so, whatever the task later does
		}
		return taskErr(info)
	}

	var (
		sf                secretFlags
		valueFile, desc   string
		kms               string
		binary            bool
		tags, addTags     []string
		removeTags        []string
		versionID, stage  string
		withoutRecovery   bool
		window            int32
		prefix, nextToken string
		maxResults        int32
		planned           bool
		deprecated        bool
		um                unmanagedFlags
		gen               generateFlags
	)
	valueFlags := func(c *cobra.Command) {
		c.Flags().StringVar(&valueFile, "value-file", "", "read the value from this file (- for stdin)")
		c.Flags().BoolVar(&binary, "binary", false, "the value is base64: store the bytes it encodes as a binary secret")
		c.Flags().StringVar(&desc, "description", "", "description")
		c.Flags().StringVar(&kms, "kms-key-id", "", "KMS key of the secret (id, ARN or alias; default: the connector's kms_key_id)")
	}

	create := &cobra.Command{
		Use: "create NAME", Short: "Create a secret (value from --value-file or stdin, or --generate)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			g, err := gen.op(cmd)
			if err != nil {
				return err
			}
			var v *delegatev1.SecretValue
			switch {
			case g == nil:
				if v, err = readValue(cmd, valueFile, true, binary); err != nil {
					return err
				}
			case cmd.Flags().Changed("value-file") || binary:
				return usageErr(fmt.Errorf("--generate: the value is generated; do not give --value-file or --binary"))
			}
			t, err := parseTags("tag", tags)
			if err != nil {
				return err
			}
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{
				Name: args[0], Value: v, Description: desc, Tags: t, KmsKeyId: kms, Generate: g, ReturnValue: gen.show}}},
				gen.show, func(w io.Writer, r *delegatev1.SecretResult) {
					showChange("created")(w, r)
					switch {
					case gen.show && r.GetValue() == nil:
						// The value reached no caller that waits here: a
						// retry found the task finished (the value went to
						// the attempt whose connection broke), or, on a
						// cluster, it could not be brought to the replica
						// this call waited on. The manager never stores it.
						fmt.Fprintf(w, "the generated value was stored at AWS but cannot be shown here (smd secret get %s prints it)\n", r.GetName())
					case gen.show:
						fmt.Fprintln(w, r.GetValue().GetStringValue())
					case g != nil:
						fmt.Fprintf(w, "the generated value was not shown (smd secret get %s prints it)\n", r.GetName())
					}
				})
		},
	}
	gen.register(create)
	upsert := &cobra.Command{
		Use: "upsert NAME", Short: "Create a secret, or update it if it exists", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := um.policy()
			if err != nil {
				return err
			}
			v, err := readValue(cmd, valueFile, true, binary)
			if err != nil {
				return err
			}
			t, err := parseTags("tag", tags)
			if err != nil {
				return err
			}
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Upsert{Upsert: &delegatev1.UpsertSecretOp{
				Name: args[0], Value: v, Description: desc, Tags: t, KmsKeyId: kms, Unmanaged: p}}}, false, func(w io.Writer, r *delegatev1.SecretResult) {
				verb := "updated"
				if r.GetCreated() {
					verb = "created"
				}
				showChange(verb)(w, r)
			})
		},
	}
	update := &cobra.Command{
		Use: "update NAME", Short: "Write a new value (and/or description, KMS key) of a secret", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := um.policy()
			if err != nil {
				return err
			}
			v, err := readValue(cmd, valueFile, desc == "" && kms == "", binary)
			if err != nil {
				return err
			}
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Update{Update: &delegatev1.UpdateSecretOp{
				Name: args[0], Value: v, Description: desc, KmsKeyId: kms, Unmanaged: p}}}, false, showChange("updated"))
		},
	}
	for _, c := range []*cobra.Command{create, upsert, update} {
		valueFlags(c)
		sf.register(c, true)
	}
	for _, c := range []*cobra.Command{create, upsert} {
		c.Flags().StringArrayVar(&tags, "tag", nil, "tag key=value (repeatable)")
	}
	get := &cobra.Command{
		Use: "get NAME[#key]", Short: "Print a secret's value (or one JSON key of it; binary values in base64)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Get{Get: &delegatev1.GetSecretOp{
				Name: args[0], VersionId: versionID, VersionStage: stage}}}, false, func(w io.Writer, r *delegatev1.SecretResult) {
				switch v := r.GetValue().GetValue().(type) {
				case *delegatev1.SecretValue_StringValue:
					fmt.Fprintln(w, v.StringValue)
				case *delegatev1.SecretValue_BinaryValue:
					fmt.Fprintln(w, base64.StdEncoding.EncodeToString(v.BinaryValue))
				}
			})
		},
	}
	get.Flags().StringVar(&versionID, "version-id", "", "a version id")
	get.Flags().StringVar(&stage, "version-stage", "", "a version stage (default AWSCURRENT)")
	sf.register(get, false)
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete a secret (recovery window, or --without-recovery)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := um.policy()
			if err != nil {
				return err
			}
			op := &delegatev1.DeleteSecretOp{Name: args[0], RecoveryWindowDays: window, Unmanaged: p}
			if cmd.Flags().Changed("without-recovery") {
				op.ForceDeleteWithoutRecovery = &withoutRecovery
			}
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Delete{Delete: op}}, false,
				func(w io.Writer, r *delegatev1.SecretResult) {
					if d := r.GetDeletionDate(); d != nil {
						fmt.Fprintf(w, "deleted %s; recoverable until %s (smd secret restore %s)\n", r.GetName(), d.AsTime().Format(timeLayout+" MST"), r.GetName())
					} else {
						fmt.Fprintf(w, "deleted %s without recovery\n", r.GetName())
					}
					adopted(w, r)
				})
		},
	}
	del.Flags().BoolVar(&withoutRecovery, "without-recovery", false, "delete at once, without a recovery window (AWS's ForceDeleteWithoutRecovery)")
	del.Flags().Int32Var(&window, "recovery-window-days", 0, "days the secret stays recoverable (7-30; default the connector's)")
	sf.register(del, true)
	restore := &cobra.Command{
		Use: "restore NAME", Short: "Cancel a scheduled deletion", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := um.policy()
			if err != nil {
				return err
			}
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Restore{Restore: &delegatev1.RestoreSecretOp{Name: args[0], Unmanaged: p}}}, false,
				func(w io.Writer, r *delegatev1.SecretResult) {
					fmt.Fprintf(w, "restored %s\n", r.GetName())
					adopted(w, r)
				})
		},
	}
	sf.register(restore, true)
	tag := &cobra.Command{
		Use: "tag NAME", Short: "Add (--add k=v) and remove (--remove k) tags of a secret", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := um.policy()
			if err != nil {
				return err
			}
			add, err := parseTags("add", addTags)
			if err != nil {
				return err
			}
			if len(add) == 0 && len(removeTags) == 0 {
				return usageErr(fmt.Errorf("--add or --remove: at least one tag to change"))
			}
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Tag{Tag: &delegatev1.TagSecretOp{
				Name: args[0], Add: add, Remove: removeTags, Unmanaged: p}}}, false, func(w io.Writer, r *delegatev1.SecretResult) {
				fmt.Fprintf(w, "tagged %s\n", r.GetName())
				adopted(w, r)
			})
		},
	}
	tag.Flags().StringArrayVar(&addTags, "add", nil, "tag key=value to add or change (repeatable)")
	tag.Flags().StringArrayVar(&removeTags, "remove", nil, "tag key to remove (repeatable)")
	sf.register(tag, true)
	for _, c := range []*cobra.Command{upsert, update, del, restore, tag} {
		um.register(c)
	}
	list := &cobra.Command{
		Use: "list", Short: "List secrets under the connector's prefix", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_List{List: &delegatev1.ListSecretsOp{
				NamePrefix: prefix, MaxResults: maxResults, NextToken: nextToken, IncludePlannedDeletion: planned}}}, false,
				func(w io.Writer, r *delegatev1.SecretResult) {
					rows := [][]string{}
					for _, m := range r.GetSecrets() {
						changed, deleted := "-", "-"
						if t := m.GetLastChangedDate(); t != nil {
							changed = t.AsTime().Format(timeLayout)
						}
						if t := m.GetDeletedDate(); t != nil {
							deleted = t.AsTime().Format(timeLayout)
						}
						rows = append(rows, []string{m.GetName(), orDash(m.GetDescription()), changed, deleted})
					}
					table(w, []string{"NAME", "DESCRIPTION", "CHANGED", "DELETED"}, rows)
					moreNote(w, r)
				})
		},
	}
	list.Flags().StringVar(&prefix, "prefix", "", "only names starting with this (under the connector's prefix)")
	list.Flags().BoolVar(&planned, "include-planned-deletion", false, "include secrets scheduled for deletion")
	versions := &cobra.Command{
		Use: "versions NAME", Short: "List a secret's versions: ids, staging labels, dates (never values)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Versions{Versions: &delegatev1.ListSecretVersionsOp{
				Name: args[0], MaxResults: maxResults, NextToken: nextToken, IncludeDeprecated: deprecated}}}, false,
				func(w io.Writer, r *delegatev1.SecretResult) {
					rows := [][]string{}
					for _, v := range r.GetVersions() {
						created, accessed := "-", "-"
						if t := v.GetCreatedDate(); t != nil {
							created = t.AsTime().Format(timeLayout)
						}
						if t := v.GetLastAccessedDate(); t != nil {
							accessed = t.AsTime().Format("2006-01-02")
						}
						rows = append(rows, []string{v.GetVersionId(), orDash(strings.Join(v.GetStages(), ",")), created, accessed})
					}
					table(w, []string{"VERSION", "STAGES", "CREATED", "LAST ACCESSED"}, rows)
					moreNote(w, r)
				})
		},
	}
	versions.Flags().BoolVar(&deprecated, "include-deprecated", false, "include versions without a staging label")
	for _, c := range []*cobra.Command{list, versions} {
		c.Flags().Int32Var(&maxResults, "max-results", 0, "page size, 1-100")
		c.Flags().StringVar(&nextToken, "next-token", "", "continue a previous listing")
		sf.register(c, false)
	}
	describe := &cobra.Command{
		Use: "describe NAME", Short: "Show a secret's metadata (never its value)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, &sf, &delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Describe{Describe: &delegatev1.DescribeSecretOp{Name: args[0]}}}, false,
				func(w io.Writer, r *delegatev1.SecretResult) {
					m := r.GetMeta()
					rows := [][]string{{"name", m.GetName()}, {"arn", m.GetArn()}, {"description", orDash(m.GetDescription())},
						{"kms key", orDash(m.GetKmsKeyId())}}
					if t := m.GetDeletedDate(); t != nil {
						rows = append(rows, []string{"deleted", t.AsTime().Format(timeLayout + " MST")})
					}
					for _, k := range sortedKeys(m.GetTags()) {
						rows = append(rows, []string{"tag " + k, m.GetTags()[k]})
					}
					for _, id := range sortedKeys(m.GetVersionStages()) {
						rows = append(rows, []string{"version " + id, strings.Join(m.GetVersionStages()[id].GetStages(), ",")})
					}
					table(w, []string{"FIELD", "VALUE"}, rows)
				})
		},
	}
	sf.register(describe, false)
	cmd.AddCommand(create, upsert, get, update, del, restore, tag, list, versions, describe)
	return cmd
}

func showChange(verb string) func(io.Writer, *delegatev1.SecretResult) {
	return func(w io.Writer, r *delegatev1.SecretResult) {
		if r.GetVersionId() != "" {
			fmt.Fprintf(w, "%s %s (version %s)\n", verb, r.GetName(), r.GetVersionId())
		} else {
			fmt.Fprintf(w, "%s %s\n", verb, r.GetName())
		}
		adopted(w, r)
	}
}

// adopted notes that a change tagged a secret it did not manage yet.
func adopted(w io.Writer, r *delegatev1.SecretResult) {
	if r.GetAdopted() {
		fmt.Fprintf(w, "adopted %s: it now carries the connector's managed-by tag\n", r.GetName())
	}
}

// moreNote tells how to get the next page.
func moreNote(w io.Writer, r *delegatev1.SecretResult) {
	if r.GetNextToken() != "" {
		fmt.Fprintf(w, "more: --next-token %s\n", r.GetNextToken())
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
