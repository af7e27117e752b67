package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

func newTaskCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "task", Short: "Inspect tasks"}
	cf.register(cmd)

	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show a task",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := call(cmd, &cf, func(ctx context.Context, c delegatev1.ManagerServiceClient) (*delegatev1.TaskInfo, error) {
				return c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: args[0]})
			}, func(w io.Writer, info *delegatev1.TaskInfo) error {
				return printTasks(w, info)
			})
			return err
		},
	}

	var state, pageToken string
	var limit int32
	list := &cobra.Command{
		Use:   "list",
		Short: "List recent async tasks, newest first",
		Long: "List recent async tasks, newest first. The manager returns at most 1000 a call; smd asks\n" +
			"for pages until it has --limit tasks (0: all of them). When more are left it says how to\n" +
			"continue (--page-token; with -o json, next_page_token).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usageErr(fmt.Errorf("--limit: must be 0 (all tasks) or more (got %d)", limit))
			}
			req := &delegatev1.ListTasksRequest{PageToken: pageToken}
			if state != "" {
				v, ok := delegatev1.TaskState_value[strings.ToUpper(state)]
				if !ok || v == 0 {
					return usageErr(fmt.Errorf("--state: must be queued, leased, succeeded or failed (got %q)", state))
				}
				req.State = delegatev1.TaskState(v)
			}
			_, err := call(cmd, &cf, func(ctx context.Context, c delegatev1.ManagerServiceClient) (*delegatev1.ListTasksResponse, error) {
				out := &delegatev1.ListTasksResponse{}
				for {
					req.Limit = maxListPage
					if limit > 0 {
						req.Limit = min(limit-int32(len(out.Tasks)), maxListPage)
					}
					resp, err := c.ListTasks(ctx, req)
					if err != nil {
						return nil, err
					}
					out.Tasks = append(out.Tasks, resp.GetTasks()...)
					out.NextPageToken = resp.GetNextPageToken()
					if out.NextPageToken == "" || limit > 0 && int32(len(out.Tasks)) >= limit {
						return out, nil
					}
					req.PageToken = out.NextPageToken
				}
			}, func(w io.Writer, out *delegatev1.ListTasksResponse) error {
				if err := printTasks(w, out.GetTasks()...); err != nil {
					return err
				}
				if out.NextPageToken != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "smd: more tasks: smd task list --page-token %s\n", out.NextPageToken)
				}
				return nil
			})
			return err
		},
	}
	list.Flags().StringVar(&state, "state", "", "only tasks in this state: queued, leased, succeeded, failed")
	list.Flags().Int32Var(&limit, "limit", 50, "at most this many tasks; 0 lists them all")
	list.Flags().StringVar(&pageToken, "page-token", "", "continue a listing after the tasks it printed (its next_page_token)")

	watch := &cobra.Command{
		Use:   "watch ID",
		Short: "Print a task's state changes until it is final",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := cf.managerClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			stream, err := c.WatchTask(ctx, &delegatev1.GetTaskRequest{Id: args[0]})
			if err != nil {
				return apiErr(err)
			}
			var last *delegatev1.TaskInfo
			for {
				info, err := stream.Recv()
				if err == io.EOF {
					return taskErr(last)
				}
				if err != nil {
					return apiErr(err)
				}
				last = info
				if cf.output == "json" {
					if err := printJSON(cmd.OutOrStdout(), info); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\tattempt %d\t%s\n", info.GetId(), stateName(info.GetState()),
					info.GetAttempt(), orDash(info.GetDelegate()))
			}
		},
	}
	cmd.AddCommand(get, list, watch)
	return cmd
}

// maxListPage is the most tasks the manager returns a call (its
// maxListPage).
const maxListPage = 1000

func stateName(s delegatev1.TaskState) string { return strings.ToLower(s.String()) }

// printTasks is the table of smd task get and list.
func printTasks(w io.Writer, ts ...*delegatev1.TaskInfo) error {
	rows := [][]string{}
	for _, t := range ts {
		code, msg := "-", ""
		if o := t.GetOutcome(); o != nil {
			code, msg = o.GetCode().String(), o.GetMessage()
		}
		rows = append(rows, []string{t.GetId(), t.GetKind(), stateName(t.GetState()), code, itoa(t.GetAttempt()),
			orDash(t.GetDelegate()), orDash(strings.Join(t.GetSelectors(), ",")), ago(t.GetCreatedAt()), msg})
	}
	return table(w, []string{"ID", "KIND", "STATE", "CODE", "ATTEMPT", "DELEGATE", "SELECTORS", "CREATED", "MESSAGE"}, rows)
}
