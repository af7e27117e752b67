package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// The dial-call-print that every operator command shares once it has
// parsed its own arguments. A command checks its arguments first (usage
// errors, nothing sent), then calls call (or dialCall and show when it
// prints something else), and a command that ran a task exits with its
// outcome (taskErr) after printing it.

// callFunc makes one call (or one paged listing, or one retried
// submission) with the client, in ctx, which carries the operator token.
type callFunc[T proto.Message] func(ctx context.Context, c delegatev1.ManagerServiceClient) (T, error)

// dialCall resolves cf's flags (environment, checks), dials the manager,
// runs do, and closes the connection. do's error goes through apiErr (a
// usage error do returns is kept as it is).
func dialCall[T proto.Message](cmd *cobra.Command, cf *clientFlags, do callFunc[T]) (T, error) {
	var zero T
	c, ctx, done, err := cf.managerClient(cmd)
	if err != nil {
		return zero, err
	}
	defer done()
	resp, err := do(ctx, c)
	if err != nil {
		return zero, apiErr(err)
	}
	return resp, nil
}

// show prints resp on the command's output: as JSON with -o json,
// otherwise with text.
func show[T proto.Message](cmd *cobra.Command, cf *clientFlags, resp T, text func(w io.Writer, resp T) error) error {
	if cf.output == "json" {
		return printJSON(cmd.OutOrStdout(), resp)
	}
	return text(cmd.OutOrStdout(), resp)
}

// call is dialCall then show; it returns the response for a command that
// exits with the outcome of the task it ran.
func call[T proto.Message](cmd *cobra.Command, cf *clientFlags, do callFunc[T], text func(w io.Writer, resp T) error) (T, error) {
	resp, err := dialCall(cmd, cf, do)
	if err != nil {
		return resp, err
	}
	return resp, show(cmd, cf, resp, text)
}
