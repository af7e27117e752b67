package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/rs/zerolog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/outbox"
	"github.com/smdelegate/smdelegate/manager/dispatch"
	"github.com/smdelegate/smdelegate/manager/identity"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// maxCapacity bounds what a delegate may announce.
const maxCapacity = 10000

// Service implements DelegateService.Connect.
type Service struct {
	delegatev1.UnimplementedDelegateServiceServer
	d   *dispatch.Dispatcher
	log zerolog.Logger
	// wg joins the senders and receivers of the streams. They outlive
	// Connect: a sender blocked in Send (the agent does not read) or a
	// receiver in Recv is released only by the end of the stream, which
	// comes when Connect returns. Server.Close waits for them after the
	// gRPC server stopped.
	wg sync.WaitGroup
}

// New is the Connect handler over dispatcher d, logging with log.
func New(d *dispatch.Dispatcher, log zerolog.Logger) *Service {
	return &Service{d: d, log: log}
}

// Wait joins the senders and receivers of the streams, once the gRPC
// server stopped (they end with their streams).
func (s *Service) Wait() { s.wg.Wait() }

// Connect serves one agent stream: Hello first, then credits, heartbeats,
// results and draining from the agent, tasks, cancels and acks to it.
func (s *Service) Connect(stream delegatev1.DelegateService_ConnectServer) error {
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
	case len(h.GetRunning()) > int(h.GetCapacity()):
		return status.Errorf(codes.InvalidArgument, "hello.running: lists %d tasks, more than hello.capacity (%d); a delegate runs at most its capacity",
			len(h.GetRunning()), h.GetCapacity())
	}
	id := identity.From(ctx)
	out := outbox.New[*delegatev1.ManagerMessage](dispatch.OutboxLimit(int(h.GetCapacity())))
	sess, err := s.d.Connect(h, id, out)
	if err != nil {
		var fe *config.FieldError
		switch {
		case errors.Is(err, dispatch.ErrShuttingDown):
			return status.Error(codes.Unavailable, err.Error())
		case errors.Is(err, dispatch.ErrNameInUse):
			// Another agent holds the name: it may leave, so agents retry.
			return status.Error(codes.AlreadyExists, err.Error())
		case errors.As(err, &fe):
			return status.Error(codes.InvalidArgument, err.Error())
		case store.IsUnavailable(err):
			// A replica of a cluster records the name in the store first.
			s.log.Warn().Err(err).Str("delegate", h.GetName()).Msg("could not register the delegate in the cluster: the store is unavailable")
			return status.Error(codes.Unavailable, "the manager could not register the delegate (its store is unavailable); try again")
		}
		return status.Error(codes.PermissionDenied, err.Error())
	}
	log := s.log.With().Str("delegate", sess.Name()).Logger() // connect logged "delegate connected"
	sendCtx, stopSend := context.WithCancel(ctx)
	defer func() {
		stopSend()
		sess.Disconnect() // closes out
		log.Info().Msg("delegate disconnected")
	}()

	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		var buf []*delegatev1.ManagerMessage
		for {
			buf = out.Take(sendCtx, buf)
			if buf == nil {
				return
			}
			for _, m := range buf {
				if err := stream.Send(m); err != nil {
					return // the stream is broken or ended; Recv fails too
				}
			}
		}
	}()
	recvErr := make(chan error, 1)
	go func() { defer s.wg.Done(); recvErr <- s.recvLoop(stream, sess) }()

	select {
	case err := <-recvErr:
		var pe *protocolError
		if errors.As(err, &pe) {
			return closedStatus(sess.Evict(dispatch.CloseInvalidMessage, pe.Error()))
		}
		return err
	case <-out.Overflow():
		return closedStatus(sess.Evict(dispatch.CloseOutboxFull, fmt.Sprintf(
			"the delegate did not read its stream: %d messages were waiting, the limit for capacity %d; "+
				"the manager closed the stream and returned its tasks to the queue", out.Limit(), sess.Capacity())))
	case <-sess.Evicted():
		return closedStatus(sess.EvictErr()) // set before evicted was closed
	case <-sess.Replaced():
		log.Warn().Msg("the delegate reconnected on a newer stream; closing this one")
		return status.Errorf(codes.AlreadyExists, "delegate %q reconnected on a newer stream; this one is closed", sess.Name())
	case <-s.d.Stopping():
		// Returning ends the stream; the agent reconnects (to another
		// replica where there is one) and resumes its running tasks.
		return status.Error(codes.Unavailable, "manager is shutting down")
	}
}

// recvLoop handles the agent's messages until the stream ends. A message
// that breaks the protocol ends it with a *protocolError.
func (s *Service) recvLoop(stream delegatev1.DelegateService_ConnectServer, sess *dispatch.Session) error {
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
			// An agent grants one credit per finished task.
			if n := msg.Credit.GetCredits(); n < 1 || int(n) > sess.Capacity() {
				return protocolErrorf("credit.credits: must be between 1 and the capacity of %d the delegate announced in hello, not %d", sess.Capacity(), n)
			}
			sess.Credit(int(msg.Credit.GetCredits()))
		case *delegatev1.AgentMessage_Heartbeat:
			// Each listed task unknown to the manager costs a Cancel: the
			// list is bounded like the delegate's work.
			if n := len(msg.Heartbeat.GetRunning()); n > sess.Capacity() {
				return protocolErrorf("heartbeat.running: lists %d tasks, more than the capacity of %d the delegate announced in hello", n, sess.Capacity())
			}
			sess.Heartbeat(msg.Heartbeat.GetSeq(), msg.Heartbeat.GetRunning())
		case *delegatev1.AgentMessage_Result:
			sess.Result(msg.Result)
		case *delegatev1.AgentMessage_Draining:
			sess.Drain()
		case *delegatev1.AgentMessage_Hello:
			return protocolErrorf("hello: sent twice on one stream")
		}
	}
}

// protocolError is a message from a delegate that breaks the protocol;
// its stream is closed with InvalidArgument and this message.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return e.msg }

func protocolErrorf(format string, args ...any) error {
	return &protocolError{fmt.Sprintf(format, args...)}
}

// closedStatus is the status a stream the manager closed ends with, by
// the reason it was closed: a protocol error is InvalidArgument, an
// overflowing outbox ResourceExhausted, a silent delegate Unavailable (it
// may reconnect at once).
func closedStatus(e *dispatch.StreamClosedError) error {
	code := codes.Unavailable
	switch e.Reason {
	case dispatch.CloseInvalidMessage:
		code = codes.InvalidArgument
	case dispatch.CloseOutboxFull:
		code = codes.ResourceExhausted
	}
	return status.Error(code, e.Msg)
}
