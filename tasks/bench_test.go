package tasks_test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// BenchmarkGet compares a get task run by the Runner (validation, the
// pooled client, the outcome) with the bare SDK call it makes, against the
// same emulator: the difference is what the tasks layer costs per task.
func BenchmarkGet(b *testing.B) {
	e := newEnv(b, envOptions{})
	e.emu.PutSecretDirect(prefix+"/bench", "value", nil)
	c := e.connector(b, delegatev1.CredentialType_ACCESS_KEY)
	task := &delegatev1.SecretTask{Connector: c, Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "bench"}}}
	b.Run("runner", func(b *testing.B) {
		for b.Loop() {
			if out := e.runner.Run(context.Background(), "task-bench", task); out.GetCode() != delegatev1.Code_OK {
				b.Fatalf("get: %v", out)
			}
		}
	})
	sm := secretsmanager.New(secretsmanager.Options{
		Region: region, BaseEndpoint: aws.String(e.url),
		Credentials: aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(connKeyID, connSecret, "")),
	})
	b.Run("sdk", func(b *testing.B) {
		for b.Loop() {
			if _, err := sm.GetSecretValue(context.Background(), &secretsmanager.GetSecretValueInput{SecretId: aws.String(prefix + "/bench")}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
