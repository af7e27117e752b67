package manager

import (
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// insecureCreds is plaintext, used only when tls.insecure says so.
func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }
