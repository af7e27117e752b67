package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/smdelegate/smdelegate/internal/config"
)

// Resolver looks up the addresses of a host name. *net.Resolver is one;
// tests inject their own.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// resolveTimeout bounds one lookup of a manager's host name.
const resolveTimeout = 10 * time.Second

// endpoint is one address of the manager setting, as the operator wrote it.
type endpoint struct {
	host, port string
}

func (e endpoint) String() string { return net.JoinHostPort(e.host, e.port) }

// target is one address to dial.
type target struct {
	// addr is the host:port dialed: the endpoint itself for an IP
	// address, one of its name's addresses otherwise.
	addr string
	// serverName is the name the manager's certificate must hold: the
	// endpoint's host, also when addr is one of its addresses.
	serverName string
	// endpoint is the entry of the manager setting addr comes from.
	endpoint string
	// err is why the endpoint's name did not resolve: dialing this target
	// fails with it, and the rotation moves on.
	err error
}

// parseManagers splits the manager setting (addresses separated by
// commas) into its endpoints. Its error names the field as the operator
// wrote it: manager when it holds one address, manager[i] when several.
func parseManagers(s string) ([]endpoint, error) {
	parts := strings.Split(s, ",")
	if strings.TrimSpace(s) == "" {
		return nil, config.Errf("manager", "must not be empty (host:port of the manager, or several separated by commas)")
	}
	var (
		eps  []endpoint
		errs []error
		seen = map[string]int{}
	)
	for i, p := range parts {
		field := "manager"
		if len(parts) > 1 {
			field = fmt.Sprintf("manager[%d]", i)
		}
		e, err := parseEndpoint(strings.TrimSpace(p))
		if err != nil {
			errs = append(errs, config.Errf(field, "%v", err))
			continue
		}
		if j, dup := seen[e.String()]; dup {
			errs = append(errs, config.Errf(field, "%s repeats manager[%d]", e, j))
			continue
		}
		seen[e.String()] = i
		eps = append(eps, e)
	}
	return eps, errors.Join(errs...)
}

// parseEndpoint checks one address: host:port with a host and a numeric
// port.
func parseEndpoint(s string) (endpoint, error) {
	if s == "" {
		return endpoint{}, errors.New("must not be empty (host:port)")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return endpoint{}, fmt.Errorf("%q must be host:port, e.g. smd-manager.example.internal:7070", s)
	}
	if host == "" {
		return endpoint{}, fmt.Errorf("%q has no host", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return endpoint{}, fmt.Errorf("%q: the port must be a number from 1 to 65535", s)
	}
	return endpoint{host: host, port: port}, nil
}

// rotation hands out the address of each connection attempt. It expands
// the endpoints into addresses (a host name into every address it
// resolves to, each dialed with that name as TLS server name) once per
// round, starts every round at the same random offset, and walks the
// round in order, so an agent tries every address before one again, and
// a fleet of agents spreads over the managers instead of all trying the
// first one listed. docs/architecture.md says why.
type rotation struct {
	endpoints []endpoint
	resolver  Resolver
	// offset is where every round starts: random, drawn once.
	offset int
	// round is the current round's addresses, next the position in it of
	// the next attempt (len(round) when the round is done).
	round []target
	next  int
}

// newRotation returns a rotation over endpoints; intn(n) draws the
// random offset in [0, n).
func newRotation(endpoints []endpoint, r Resolver, intn func(int) int) *rotation {
	return &rotation{endpoints: endpoints, resolver: r, offset: intn(1 << 30)}
}

// Next returns the address of the next attempt, starting a new round
// (resolving every host name again) when the last one is done.
func (r *rotation) Next(ctx context.Context) target {
	if r.next >= len(r.round) {
		r.round = r.expand(ctx)
		r.next = 0
	}
	t := r.round[(r.offset+r.next)%len(r.round)]
	r.next++
	return t
}

// expand resolves the endpoints into the addresses of one round, in the
// order of the setting and, for a host name, the resolver's order. A name
// that does not resolve stays in the round as a target carrying the error.
func (r *rotation) expand(ctx context.Context) []target {
	var out []target
	for _, e := range r.endpoints {
		if net.ParseIP(e.host) != nil {
			out = append(out, target{addr: e.String(), serverName: e.host, endpoint: e.String()})
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		ips, err := r.resolver.LookupHost(rctx, e.host)
		cancel()
		if err == nil && len(ips) == 0 {
			err = fmt.Errorf("%s has no address", e.host)
		}
		if err != nil {
			out = append(out, target{addr: e.String(), serverName: e.host, endpoint: e.String(), err: fmt.Errorf("resolve %s: %w", e.host, err)})
			continue
		}
		for _, ip := range ips {
			out = append(out, target{addr: net.JoinHostPort(ip, e.port), serverName: e.host, endpoint: e.String()})
		}
	}
	return out
}
