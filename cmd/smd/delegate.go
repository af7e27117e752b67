package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

func newDelegateCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "delegate", Short: "List and ping delegates"}
	cf.register(cmd)

	list := &cobra.Command{
		Use:   "list",
		Short: "List connected delegates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := call(cmd, &cf, func(ctx context.Context, c delegatev1.ManagerServiceClient) (*delegatev1.ListDelegatesResponse, error) {
				return c.ListDelegates(ctx, &delegatev1.ListDelegatesRequest{})
			}, printDelegates)
			return err
		},
	}

	var selectors []string
	var sleep time.Duration
	var async bool
	var pingScope, requestID string
	ping := &cobra.Command{
		Use:   "ping",
		Short: "Run a ping task on a delegate matching the selectors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sc, err := parseScope(cmd, pingScope)
			if err != nil {
				return err
			}
			if requestID != "" && !async {
				return usageErr(fmt.Errorf("--request-id: only with --async (a sync ping is not stored, and safe to repeat)"))
			}
			var start time.Time
			info, err := call(cmd, &cf, func(ctx context.Context, c delegatev1.ManagerServiceClient) (*delegatev1.TaskInfo, error) {
				start = time.Now()
				req := &delegatev1.PingRequest{Selectors: selectors, Sleep: durationpb.New(sleep), Async: async, Scope: sc}
				if async {
					// Stored: retried under a request id, queued once.
					req.RequestId = requestID
					if req.RequestId == "" {
						req.RequestId = newRequestID()
					}
					return defaultRetry.submit(ctx, cmd.ErrOrStderr(), req.RequestId, false, func(ctx context.Context) (*delegatev1.TaskInfo, error) {
						return c.Ping(ctx, req)
					})
				}
				return defaultRetry.send(ctx, cmd.ErrOrStderr(), func(ctx context.Context) (*delegatev1.TaskInfo, error) {
					return c.Ping(ctx, req)
				})
			}, func(w io.Writer, info *delegatev1.TaskInfo) error {
				if async {
					fmt.Fprintln(w, info.GetId())
				} else if info.GetOutcome().GetCode() == delegatev1.Code_OK {
					p := info.GetOutcome().GetPing()
					fmt.Fprintf(w, "pong from %s (version %s, host %s) in %s\n", p.GetDelegateName(), p.GetVersion(),
						p.GetHostname(), time.Since(start).Round(time.Microsecond))
				}
				return nil
			})
			if err != nil {
				return err
			}
			return taskErr(info)
		},
	}
	pf := ping.Flags()
	pf.StringArrayVar(&selectors, "selector", nil, "delegate selector the delegate's tags must include (repeatable)")
	pf.DurationVar(&sleep, "sleep", 0, "how long the delegate sleeps before answering (tests, benchmarks)")
	pf.BoolVar(&async, "async", false, "queue the ping durably and print its task id")
	requestIDFlag(ping, &requestID)
	pf.StringVar(&pingScope, "scope", "", "need a delegate serving this scope: account, account/org or account/org/project (env SMD_SCOPE; default: the token's scope, or any delegate)")

	var add, remove []string
	var confirm bool
	var tagScope string
	tag := &cobra.Command{
		Use:   "tag NAME [--add T]... [--remove T]... [--confirm] [--scope S]",
		Short: "Add or remove operator tags of a delegate, or confirm them for its token (applied at once, kept across restarts)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(add) == 0 && len(remove) == 0 && !confirm {
				return usageErr(fmt.Errorf("--add, --remove or --confirm: give at least one"))
			}
			var sc *delegatev1.Scope
			if cmd.Flags().Changed("scope") { // not SMD_SCOPE: the delegate's scope, not the operator's
				var err error
				if sc, err = connector.ParseScope(tagScope); err != nil {
					return usageErr(fmt.Errorf("--scope: %w", err))
				}
			}
			_, err := call(cmd, &cf, func(ctx context.Context, c delegatev1.ManagerServiceClient) (*delegatev1.TagDelegateResponse, error) {
				return c.TagDelegate(ctx, &delegatev1.TagDelegateRequest{Name: args[0], Add: add, Remove: remove, Confirm: confirm, Scope: sc})
			}, func(w io.Writer, resp *delegatev1.TagDelegateResponse) error {
				confirmed := ""
				if t := resp.GetTokenName(); t != "" {
					confirmed = " (confirmed for delegate token " + t + ")"
				}
				fmt.Fprintf(w, "delegate %s operator tags: %s%s\n", args[0], orDash(strings.Join(resp.GetOperatorTags(), ",")), confirmed)
				return nil
			})
			return err
		},
	}
	tf := tag.Flags()
	tf.StringArrayVar(&add, "add", nil, "tag to add (repeatable)")
	tf.StringArrayVar(&remove, "remove", nil, "tag to remove (repeatable)")
	tf.BoolVar(&confirm, "confirm", false, "give the operator tags to the token of the delegate connected under NAME (after its token was rotated)")
	tf.StringVar(&tagScope, "scope", "", "the scope of the delegate's token, for a delegate not connected (default: the connected delegate's, else the operator token's)")

	cmd.AddCommand(list, ping, tag)
	return cmd
}

// printDelegates is the table of smd delegate list.
func printDelegates(w io.Writer, resp *delegatev1.ListDelegatesResponse) error {
	// REPLICA appears when the manager is a replica of a cluster.
	replicas := false
	for _, d := range resp.GetDelegates() {
		replicas = replicas || d.GetReplica() != ""
	}
	rows := [][]string{}
	for _, d := range resp.GetDelegates() {
		state := "connected"
		if d.GetDraining() {
			state = "draining"
		}
		scope := "*" // an unscoped token: every scope
		if d.GetScope() != nil {
			scope = connector.ScopeKey(d.GetScope())
		}
		// Another replica's delegate lists no task ids, only a count.
		running := max(len(d.GetRunningTasks()), int(d.GetRunning()))
		row := []string{d.GetName(), state, scope, strings.Join(d.GetTags(), ","),
			fmt.Sprintf("%d/%d", running, d.GetCapacity()), orDash(d.GetVersion()),
			ago(d.GetConnectedSince()), ago(d.GetLastHeartbeat())}
		if replicas {
			row = append(row, orDash(d.GetReplica()))
		}
		rows = append(rows, row)
	}
	header := []string{"NAME", "STATE", "SCOPE", "TAGS", "RUNNING", "VERSION", "CONNECTED", "LAST SEEN"}
	if replicas {
		header = append(header, "REPLICA")
	}
	return table(w, header, rows)
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
