package manager

import (
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// The gRPC transport credentials of the manager's listener: TLS from
// tls.cert_file/tls.key_file (and tls.client_ca_file for client
// certificates) is built by Server.serverCreds; plaintext only here.

// insecureCreds is plaintext, used only when tls.insecure says so.
func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }
