// Package testenv gives tests isolated pieces of the machine's shared
// services: a fresh PostgreSQL database or a fresh pair of RabbitMQ
// exchanges per test (unique names, removed afterwards). The services
// themselves are never restarted: other test packages use them at the same time.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
)

// AMQPURL is PARLEY_TEST_AMQP_URL or the local RabbitMQ.
func AMQPURL() string {
	if u := os.Getenv("PARLEY_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// PostgresURL is PARLEY_TEST_POSTGRES_URL or the local PostgreSQL's maintenance database.
func PostgresURL() string {
	if u := os.Getenv("PARLEY_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// Name returns prefix followed by a random suffix.
func Name(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// WithHost returns rawURL with its host:port replaced (to go through a proxy).
func WithHost(rawURL, hostport string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	u.Host = hostport
	return u.String(), nil
}

// Host returns rawURL's host:port.
func Host(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	return u.Host, nil
}

// Database is a database created for one test or package.
type Database struct {
	Name string
	URL  string
}

// CreateDatabase creates a database with a unique name.
func CreateDatabase(ctx context.Context, prefix string) (Database, error) {
	name := Name(prefix)
	conn, err := pgx.Connect(ctx, PostgresURL())
	if err != nil {
		return Database{}, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return Database{}, fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := url.Parse(PostgresURL())
	if err != nil {
		return Database{}, err
	}
	u.Path = "/" + name
	return Database{Name: name, URL: u.String()}, nil
}

// Drop drops the database, disconnecting whoever is still connected.
func (d Database) Drop(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, PostgresURL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{d.Name}.Sanitize()+" WITH (FORCE)")
	return err
}

// TerminateBackends kills every connection to the database (pg_terminate_backend)
// and returns how many there were.
func (d Database) TerminateBackends(ctx context.Context) (int, error) {
	conn, err := pgx.Connect(ctx, PostgresURL())
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, d.Name).Scan(&n)
	return n, err
}

// NewDatabase creates a database for the test and drops it at cleanup.
func NewDatabase(t testing.TB, prefix string) Database {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := CreateDatabase(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := db.Drop(ctx); err != nil {
			t.Errorf("drop database %s: %v", db.Name, err)
		}
	})
	return db
}

// Topology is the pair of durable exchanges the operator declares for a
// ChatCluster (docs/topology.md): a topic exchange for publications and a
// fanout exchange for node-to-node commands.
type Topology struct {
	Exchange, ControlExchange string
}

func withChannel(fn func(ch *amqp.Channel) error) error {
	conn, err := amqp.Dial(AMQPURL())
	if err != nil {
		return fmt.Errorf("dial RabbitMQ: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	return fn(ch)
}

// Declare declares the exchanges exactly as the operator does.
func (top Topology) Declare() error {
	return withChannel(func(ch *amqp.Channel) error {
		if err := ch.ExchangeDeclare(top.Exchange, "direct", true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare %s: %w", top.Exchange, err)
		}
		if err := ch.ExchangeDeclare(top.ControlExchange, "fanout", true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare %s: %w", top.ControlExchange, err)
		}
		return nil
	})
}

// Delete deletes the exchanges (absent ones are fine).
func (top Topology) Delete() error {
	return withChannel(func(ch *amqp.Channel) error {
		for _, ex := range []string{top.Exchange, top.ControlExchange} {
			if err := ch.ExchangeDelete(ex, false, false); err != nil {
				return fmt.Errorf("delete %s: %w", ex, err)
			}
		}
		return nil
	})
}

// NewTopology names a fresh pair of exchanges, declares them and deletes them at cleanup.
func NewTopology(t testing.TB) Topology {
	t.Helper()
	top := UndeclaredTopology()
	if err := top.Declare(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := top.Delete(); err != nil {
			t.Errorf("delete topology: %v", err)
		}
	})
	return top
}

// UndeclaredTopology names a fresh pair of exchanges without declaring them.
func UndeclaredTopology() Topology {
	base := Name("parley-test")
	return Topology{Exchange: base + ".pub", ControlExchange: base + ".ctl"}
}

// DeclareExchange declares one durable exchange of kind (topic, fanout, …).
func DeclareExchange(name, kind string) error {
	return withChannel(func(ch *amqp.Channel) error {
		return ch.ExchangeDeclare(name, kind, true, false, false, false, nil)
	})
}
