package manager

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/smdelegate/smdelegate/internal/config"
)

// ClusterConfig makes the manager a replica of a cluster: several
// managers on one PostgreSQL database and schema (docs/architecture.md,
// "Cluster"). Without Name the manager runs alone, as before.
type ClusterConfig struct {
	// Name is the cluster's name. Replicas of one cluster share the
	// database; a manager of another cluster, or a single manager, is
	// refused. Needs store.driver postgres. Empty: a single manager.
	Name string `yaml:"name"`
	// Advertise is the host:port the other replicas dial to reach this
	// one (the peer link, on the gRPC listener). Default: listen, when it
	// names a host.
	Advertise string `yaml:"advertise"`
	// PeerTokenFile holds the token replicas present to each other (the
	// same on every replica, at least 32 bytes). SMD_CLUSTER_PEER_TOKEN
	// (the token itself) takes precedence.
	PeerTokenFile string `yaml:"peer_token_file"`
	// PeerToken is the token, set by LoadPeerToken (or directly by
	// tests). It is never logged.
	PeerToken string `yaml:"-"`
	// BeatInterval is how often the replica records itself alive.
	BeatInterval config.Duration `yaml:"beat_interval"`
	// DeadAfter is how long a replica may go without a heartbeat before
	// the others take it for dead: its delegates' records are dropped and
	// its queued tasks given back to the queue.
	DeadAfter config.Duration `yaml:"dead_after"`
	// PollInterval is the safety poll of the shared queue: a replica
	// pulls tasks for its delegates at least this often even if it missed
	// a notification.
	PollInterval config.Duration `yaml:"poll_interval"`
}

// peerTokenEnv is the variable that holds the peer token itself.
const peerTokenEnv = "SMD_CLUSTER_PEER_TOKEN"

// minPeerToken is the shortest peer token accepted, in bytes.
const minPeerToken = 32

// clusterNameMax bounds cluster.name (it is stored beside the lock and
// shown in errors).
const clusterNameMax = 63

// defaultClusterConfig is ClusterConfig's part of DefaultConfig.
func defaultClusterConfig() ClusterConfig {
	return ClusterConfig{
		BeatInterval: config.Duration(time.Second),
		DeadAfter:    config.Duration(10 * time.Second),
		PollInterval: config.Duration(5 * time.Second),
	}
}

// LoadPeerToken sets Cluster.PeerToken from SMD_CLUSTER_PEER_TOKEN or
// cluster.peer_token_file, unless it is already set. Surrounding white
// space (a file's trailing newline) is not part of the token. Its errors
// never hold the token.
func (c *Config) LoadPeerToken() error {
	if c.Cluster.PeerToken != "" {
		return nil
	}
	if v := os.Getenv(peerTokenEnv); v != "" {
		c.Cluster.PeerToken = strings.TrimSpace(v)
		return nil
	}
	if c.Cluster.PeerTokenFile == "" {
		return nil
	}
	b, err := os.ReadFile(c.Cluster.PeerTokenFile)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return config.Errf("cluster.peer_token_file", "cannot read %s: %v", c.Cluster.PeerTokenFile, err)
	}
	c.Cluster.PeerToken = strings.TrimSpace(string(b))
	return nil
}

// AdvertiseAddr is the address this replica's peers dial: cluster.advertise,
// else listen when it names a host ("" when neither does).
func (c *Config) AdvertiseAddr() string {
	if c.Cluster.Advertise != "" {
		return c.Cluster.Advertise
	}
	if namesHost(c.Listen) {
		return c.Listen
	}
	return ""
}

// namesHost says whether addr is host:port with a host another machine
// could dial: not empty and not a wildcard (0.0.0.0, ::).
func namesHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return false
	}
	return true
}

// validateCluster adds the problems of the cluster: section.
func (c *Config) validateCluster(add func(error)) {
	cl := c.Cluster
	beat, dead := cl.BeatInterval.D(), cl.DeadAfter.D()
	if beat < 10*time.Millisecond {
		add(config.Errf("cluster.beat_interval", "must be at least 10ms"))
	}
	if dead < 3*beat {
		add(config.Errf("cluster.dead_after", "must be at least 3 × cluster.beat_interval (%s), so that a late heartbeat or two does not make a live replica dead", 3*beat))
	}
	if cl.PollInterval.D() <= 0 {
		add(config.Errf("cluster.poll_interval", "must be positive"))
	}
	if cl.Name == "" {
		// The rest only means something for a replica: say so rather
		// than ignore it.
		if cl.Advertise != "" {
			add(config.Errf("cluster.advertise", "is only used with cluster.name; set cluster.name or remove cluster.advertise"))
		}
		if cl.PeerTokenFile != "" || cl.PeerToken != "" {
			add(config.Errf("cluster.peer_token_file", "is only used with cluster.name; set cluster.name or remove cluster.peer_token_file (and %s)", peerTokenEnv))
		}
		return
	}
	if p := clusterNameProblem(cl.Name); p != "" {
		add(config.Errf("cluster.name", "%s", p))
	}
	if c.Store.Driver != StorePostgres {
		add(config.Errf("cluster.name", "needs store.driver: postgres (the replicas of a cluster share one PostgreSQL database); store.driver is %q", c.Store.Driver))
	}
	switch {
	case cl.Advertise != "":
		if _, port, err := net.SplitHostPort(cl.Advertise); err != nil || !namesHost(cl.Advertise) || port == "" || port == "0" {
			add(config.Errf("cluster.advertise", "must be host:port with a host and port the other replicas can dial (not a wildcard such as 0.0.0.0, not port 0), e.g. manager-1.internal:7070"))
		}
	case !namesHost(c.Listen):
		add(config.Errf("cluster.advertise", "is required when listen (%q) names no host: set the host:port the other replicas dial to reach this one", c.Listen))
	}
	if len(cl.PeerToken) < minPeerToken {
		// Never the token, nor its length: only the rule.
		add(config.Errf("cluster.peer_token_file", "a peer token of at least %d bytes is required with cluster.name, the same on every replica "+
			"(cluster.peer_token_file or %s; e.g. head -c 48 /dev/urandom | base64 -w0)", minPeerToken, peerTokenEnv))
	}
}

// clusterNameProblem is what is wrong with a cluster name, or "".
func clusterNameProblem(name string) string {
	if len(name) > clusterNameMax {
		return fmt.Sprintf("must be at most %d characters", clusterNameMax)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return "must hold only lower-case letters, digits, '-', '_' and '.'"
		}
	}
	return ""
}
