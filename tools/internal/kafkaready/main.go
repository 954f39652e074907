// Command kafkaready waits until a Kafka broker answers a metadata request
// (with -brokers N: until a cluster of N brokers replicates), and
// optionally sets up the SASL user that omnibus's security tests use.
//
// scripts/brokers runs it after starting Kafka: an open port is not enough,
// because the broker accepts connections before its controller has elected
// itself and registered the broker. Exit status 0 means a metadata request
// returned at least one broker (and the user was set up, when asked); 1
// means the timeout passed first or the setup failed.
//
// With -user NAME, it then stores SCRAM-SHA-256 and SCRAM-SHA-512
// credentials for NAME, with the password read from the environment
// variable OMNIBUS_KAFKA_USER_PASSWORD (never from the command line, where
// other users of the machine could read it), and grants NAME every
// operation on the topics whose names start with -prefix and on every
// consumer group. Both steps are idempotent. They need a principal allowed
// to alter the cluster: the PLAINTEXT listener's ANONYMOUS super user.
package main

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"flag"
	"fmt"
	"hash"
	"os"
	"time"

	"github.com/segmentio/kafka-go"
)

// PasswordEnv names the environment variable holding -user's password.
const PasswordEnv = "OMNIBUS_KAFKA_USER_PASSWORD"

// scramIterations is Kafka's minimum and the Java tools' default.
const scramIterations = 4096

func main() {
	addr := flag.String("addr", "127.0.0.1:9092", "broker address")
	timeout := flag.Duration("timeout", 120*time.Second, "give up after this long")
	user := flag.String("user", "", "SCRAM user to create or update (password from $"+PasswordEnv+")")
	prefix := flag.String("prefix", "omnibus-", "topic name prefix that -user may use")
	cluster := flag.Int("brokers", 0, "wait for a cluster of this many brokers: all registered, and a probe topic replicated to all of them in sync")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var last error
	for {
		brokers, err := metadata(ctx, *addr)
		if err == nil && *cluster > 0 && len(brokers) < *cluster {
			err = fmt.Errorf("%d of %d brokers registered", len(brokers), *cluster)
		}
		if err == nil && *cluster > 0 {
			err = inSync(ctx, *addr, *cluster)
		}
		if err == nil {
			fmt.Printf("kafka metadata ok: %d broker(s), first %s:%d",
				len(brokers), brokers[0].Host, brokers[0].Port)
			break
		}
		last = err
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "kafkaready: %s did not answer metadata within %s: %v\n", *addr, *timeout, last)
			os.Exit(1)
		case <-time.After(time.Second):
		}
	}
	if *user == "" {
		fmt.Println()
		return
	}
	password := os.Getenv(PasswordEnv)
	if password == "" {
		fmt.Fprintf(os.Stderr, "\nkafkaready: -user %s needs the password in $%s\n", *user, PasswordEnv)
		os.Exit(1)
	}
	if err := setupUser(ctx, *addr, *user, password, *prefix); err != nil {
		fmt.Fprintf(os.Stderr, "\nkafkaready: setting up user %s: %v\n", *user, err)
		os.Exit(1)
	}
	fmt.Printf("; SCRAM user %s may use topics %s*\n", *user, *prefix)
}

func metadata(ctx context.Context, addr string) ([]kafka.Broker, error) {
	dialCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := (&kafka.Dialer{Timeout: 5 * time.Second}).DialContext(dialCtx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	brokers, err := conn.Brokers()
	if err != nil {
		return nil, err
	}
	if len(brokers) == 0 {
		return nil, errors.New("metadata lists no brokers yet")
	}
	return brokers, nil
}

// probeTopic is the topic whose replicas say that a cluster replicates.
const probeTopic = "omnibus-cluster-ready"

// inSync creates probeTopic with n replicas when it is missing and checks
// that every partition has a leader and all n replicas in sync: the
// cluster elects leaders and replicates.
func inSync(ctx context.Context, addr string, n int) error {
	dialCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := (&kafka.Dialer{Timeout: 5 * time.Second}).DialContext(dialCtx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	ctl, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	cc, err := (&kafka.Dialer{Timeout: 5 * time.Second}).DialContext(dialCtx, "tcp", fmt.Sprintf("%s:%d", ctl.Host, ctl.Port))
	if err != nil {
		return fmt.Errorf("controller %s:%d: %w", ctl.Host, ctl.Port, err)
	}
	defer cc.Close()
	_ = cc.SetDeadline(time.Now().Add(10 * time.Second))
	err = cc.CreateTopics(kafka.TopicConfig{Topic: probeTopic, NumPartitions: n, ReplicationFactor: n})
	if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("creating %s: %w", probeTopic, err)
	}
	parts, err := conn.ReadPartitions(probeTopic)
	if err != nil {
		return fmt.Errorf("partitions of %s: %w", probeTopic, err)
	}
	if len(parts) < n {
		return fmt.Errorf("%s has %d partitions, want %d", probeTopic, len(parts), n)
	}
	for _, p := range parts {
		if p.Leader.ID < 0 || len(p.Isr) < n {
			return fmt.Errorf("%s partition %d: leader %d, %d of %d replicas in sync", probeTopic, p.ID, p.Leader.ID, len(p.Isr), n)
		}
	}
	return nil
}

// setupUser stores user's SCRAM credentials and its ACLs. The broker may
// refuse the first requests while its authorizer loads; they are retried
// until ctx ends.
func setupUser(ctx context.Context, addr, user, password, prefix string) error {
	c := &kafka.Client{Addr: kafka.TCP(addr), Timeout: 10 * time.Second}
	var ups []kafka.UserScramCredentialsUpsertion
	for _, m := range []struct {
		mech kafka.ScramMechanism
		h    func() hash.Hash
		size int
	}{{kafka.ScramMechanismSha256, sha256.New, sha256.Size}, {kafka.ScramMechanismSha512, sha512.New, sha512.Size}} {
		salt := make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return err
		}
		salted, err := pbkdf2.Key(m.h, password, salt, scramIterations, m.size)
		if err != nil {
			return err
		}
		ups = append(ups, kafka.UserScramCredentialsUpsertion{
			Name: user, Mechanism: m.mech, Iterations: scramIterations, Salt: salt, SaltedPassword: salted,
		})
	}
	principal := "User:" + user
	acls := []kafka.ACLEntry{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: prefix, ResourcePatternType: kafka.PatternTypePrefixed,
			Principal: principal, Host: "*", Operation: kafka.ACLOperationTypeAll, PermissionType: kafka.ACLPermissionTypeAllow},
		{ResourceType: kafka.ResourceTypeGroup, ResourceName: "*", ResourcePatternType: kafka.PatternTypeLiteral,
			Principal: principal, Host: "*", Operation: kafka.ACLOperationTypeAll, PermissionType: kafka.ACLPermissionTypeAllow},
	}
	return retry(ctx, func(ctx context.Context) error {
		// One request per mechanism: Kafka refuses a request that names
		// the same user twice.
		for _, up := range ups {
			res, err := c.AlterUserScramCredentials(ctx, &kafka.AlterUserScramCredentialsRequest{
				Upsertions: []kafka.UserScramCredentialsUpsertion{up}})
			if err != nil {
				return fmt.Errorf("AlterUserScramCredentials: %w", err)
			}
			for _, r := range res.Results {
				if r.Error != nil {
					return fmt.Errorf("AlterUserScramCredentials %s: %w", r.User, r.Error)
				}
			}
		}
		cres, err := c.CreateACLs(ctx, &kafka.CreateACLsRequest{ACLs: acls})
		if err != nil {
			return fmt.Errorf("CreateACLs: %w", err)
		}
		for _, err := range cres.Errors {
			if err != nil {
				return fmt.Errorf("CreateACLs: %w", err)
			}
		}
		return nil
	})
}

func retry(ctx context.Context, fn func(context.Context) error) error {
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}
