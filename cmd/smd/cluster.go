package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

func newClusterCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "cluster", Short: "See the replicas of the manager's cluster (managers sharing one PostgreSQL database)"}
	cf.register(cmd)

	list := &cobra.Command{
		Use:   "list",
		Short: "List the replicas of the cluster, with the delegates connected to each (needs an operator token without a scope)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := call(cmd, &cf, func(ctx context.Context, c delegatev1.ManagerServiceClient) (*delegatev1.ListReplicasResponse, error) {
				return c.ListReplicas(ctx, &delegatev1.ListReplicasRequest{})
			}, printReplicas)
			return err
		},
	}
	cmd.AddCommand(list)
	return cmd
}

// printReplicas is the table of smd cluster list; the replica that
// answered is marked with a "*" after its ID.
func printReplicas(w io.Writer, resp *delegatev1.ListReplicasResponse) error {
	rows := [][]string{}
	for _, r := range resp.GetReplicas() {
		id := r.GetId()
		if r.GetSelf() {
			id += " *"
		}
		state := "alive"
		if !r.GetAlive() {
			state = "dead"
		}
		rows = append(rows, []string{id, state, orDash(r.GetAdvertise()), orDash(r.GetHost()), fmt.Sprint(r.GetPid()),
			ago(r.GetStarted()), ago(r.GetLastSeen()), fmt.Sprint(r.GetDelegates())})
	}
	fmt.Fprintf(w, "cluster %s\n", resp.GetCluster())
	return table(w, []string{"ID", "STATE", "ADVERTISE", "HOST", "PID", "STARTED", "LAST SEEN", "DELEGATES"}, rows)
}
