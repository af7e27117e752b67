package api

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/smdelegate/smdelegate/manager/cluster"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Replicas is what ListReplicas reads of the cluster: the replica's
// membership (manager/cluster.Membership).
type Replicas interface {
	// Self is the ID of this replica.
	Self() string
	// Status reads every replica's row and the delegates it holds; its
	// errors are the store's.
	Status(ctx context.Context) ([]cluster.Status, error)
}

// SetCluster makes the API a replica's: ListReplicas lists the replicas
// of cluster name, through r. Call it before serving; a single manager
// never does.
func (s *Service) SetCluster(name string, r Replicas) {
	s.clusterName, s.replicas = name, r
}

// ListReplicas lists the replicas of the manager's cluster, for an
// operator token without a scope: replicas serve every scope, and their
// hosts and delegate counts are the whole installation's.
func (s *Service) ListReplicas(ctx context.Context, _ *delegatev1.ListReplicasRequest) (*delegatev1.ListReplicasResponse, error) {
	if s.replicas == nil {
		return nil, notReplica()
	}
	if sc := tokenScope(ctx); !sc.IsZero() {
		return nil, denied("listing the replicas of the cluster needs an operator token without a scope; this one is confined to scope %s", sc.String())
	}
	st, err := s.replicas.Status(ctx)
	if err != nil {
		return nil, s.toStatus(err)
	}
	self := s.replicas.Self()
	resp := &delegatev1.ListReplicasResponse{Cluster: s.clusterName}
	for _, r := range st {
		resp.Replicas = append(resp.Replicas, &delegatev1.ReplicaInfo{
			Id: r.ID, Advertise: r.Advertise, Host: r.Host, Pid: int32(r.PID),
			Started: timestamppb.New(r.StartedAt), LastSeen: timestamppb.New(r.LastSeen),
			Alive: r.Alive, Delegates: int32(r.Delegates), Self: r.ID == self,
		})
	}
	return resp, nil
}
