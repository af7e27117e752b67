package manager

import (
	"context"
	"errors"
	"github.com/smdelegate/smdelegate/internal/outbox"
	"io"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/internal/config"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// maxCapacity bounds what a delegate may announce.
const maxCapacity = 10000

// delegateService implements DelegateService.Connect.
type delegateService struct {
	delegatev1.UnimplementedDelegateServiceServer
	d *Dispatcher
}

// Connect serves one agent stream: Hello first, then credits, heartbeats,
// results and draining from the agent, tasks, cancels and acks to it.
func (s *delegateService) Connect(stream delegatev1.DelegateService_ConnectServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHello()
	switch {
	case h == nil:
		return status.Error(codes.InvalidArgument, "the first message on the stream must be Hello")
	case h.GetName() == "":
		return status.Error(codes.InvalidArgument, "hello.name: must not be empty")
	case h.GetCapacity() < 1 || h.GetCapacity() > maxCapacity:
		return status.Errorf(codes.InvalidArgument, "hello.capacity: must be between 1 and %d", maxCapacity)
	}
	id := identityFrom(ctx)
	out := outbox.New[*delegatev1.ManagerMessage]()
	dg, err := s.d.connect(h, id, out)
	if err != nil {
		var fe *config.FieldError
		switch {
		case errors.Is(err, ErrShuttingDown):
			return status.Error(codes.Unavailable, err.Error())
		case errors.Is(err, ErrNameInUse):
			// Another agent holds the name: it may leave, so agents retry.
			return status.Error(codes.AlreadyExists, err.Error())
		case errors.As(err, &fe):
			return status.Error(codes.InvalidArgument, err.Error())
		}
		return status.Error(codes.PermissionDenied, err.Error())
	}
	log := s.d.log.With().Str("delegate", dg.name).Logger()
	log.Info().Strs("tags", dg.tags.sorted()).Str("scope", scopeText(dg.scope)).Int("capacity", dg.capacity).Int("resumed", len(h.GetRunning())).Msg("delegate connected")
	defer func() {
		s.d.disconnect(dg)
		log.Info().Msg("delegate disconnected")
	}()

	sendCtx, stopSend := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer stopSend()
		var buf []*delegatev1.ManagerMessage
		for {
			buf = out.Take(sendCtx, buf)
			if buf == nil {
				return
			}
			for _, m := range buf {
				if err := stream.Send(m); err != nil {
					return // the stream is broken; Recv fails too
				}
			}
		}
	}()
	defer func() { out.Close(); stopSend(); wg.Wait() }()

	recvErr := make(chan error, 1)
	go func() { recvErr <- s.recvLoop(stream, dg) }()
	select {
	case err := <-recvErr:
		return err
	case <-dg.kicked:
		log.Warn().Msg("the delegate reconnected on a newer stream; closing this one")
		return status.Errorf(codes.AlreadyExists, "delegate %q reconnected on a newer stream; this one is closed", dg.name)
	case <-s.d.stopping:
		// Returning ends the stream; the agent reconnects (to another
		// replica where there is one) and resumes its running tasks.
		return status.Error(codes.Unavailable, "manager is shutting down")
	}
}

// recvLoop handles the agent's messages until the stream ends.
func (s *delegateService) recvLoop(stream delegatev1.DelegateService_ConnectServer, dg *delegate) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch msg := m.Msg.(type) {
		case *delegatev1.AgentMessage_Credit:
			s.d.credit(dg, int(msg.Credit.GetCredits()))
		case *delegatev1.AgentMessage_Heartbeat:
			s.d.heartbeat(dg, msg.Heartbeat.GetRunning())
		case *delegatev1.AgentMessage_Result:
			s.d.result(dg, msg.Result)
		case *delegatev1.AgentMessage_Draining:
			s.d.drain(dg)
		case *delegatev1.AgentMessage_Hello:
			return status.Error(codes.InvalidArgument, "hello: sent twice on one stream")
		}
	}
}
