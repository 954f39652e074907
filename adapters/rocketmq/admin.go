package rocketmq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Administrative request codes.
const (
	codeGetBrokerConfig      = 26
	codeGetBrokerRuntimeInfo = 28
	codeDeleteSubscription   = 207
	codeDeleteTopicInBroker  = 215
	codeDeleteTopicInNamesrv = 216
)

// BrokerDescription is what a master broker says of itself.
type BrokerDescription struct {
	Addr    string
	Version string            // brokerVersionDesc, e.g. "V5_5_0"
	Config  map[string]string // the broker's configuration (GET_BROKER_CONFIG)
}

// Describe asks every master broker for its version and configuration
// (flushDiskType, maxMessageSize and the rest), for tools such as the
// benchmark's broker probe.
func (b *Broker) Describe(ctx context.Context) ([]BrokerDescription, error) { return b.c.describe(ctx) }

func (b *client) describe(ctx context.Context) ([]BrokerDescription, error) {
	ctx, cancel := b.requestCtx(ctx)
	defer cancel()
	masters, err := b.clusterMasters(ctx)
	if err != nil {
		return nil, err
	}
	var out []BrokerDescription
	for _, addr := range masters {
		c, err := b.brokers.get(ctx, addr)
		if err != nil {
			return out, err
		}
		d := BrokerDescription{Addr: addr, Config: map[string]string{}}
		resp, err := c.callOK(ctx, codeGetBrokerRuntimeInfo, nil, nil)
		if err != nil {
			return out, err
		}
		var rt struct {
			Table map[string]string `json:"table"`
		}
		if err := json.Unmarshal(fixJSON(resp.body), &rt); err == nil {
			d.Version = rt.Table["brokerVersionDesc"]
		}
		resp, err = c.callOK(ctx, codeGetBrokerConfig, nil, nil)
		if err != nil {
			return out, err
		}
		for _, line := range strings.Split(string(resp.body), "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
				d.Config[k] = v
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// Remove deletes what this package made on the cluster for topic: the
// topic, its dead-letter topic ("<topic>.dlq"), and for each of groups
// the consumer group (with its offsets) and its retry topic. Topics that
// do not exist are skipped.
func (b *Broker) Remove(ctx context.Context, topic string, groups ...string) error {
	return b.c.remove(ctx, topic, groups...)
}

func (b *client) remove(ctx context.Context, topic string, groups ...string) error {
	ctx, cancel := b.requestCtx(ctx)
	defer cancel()
	masters, err := b.clusterMasters(ctx)
	if err != nil {
		return err
	}
	topics := []string{Name(topic, maxTopicLen), Name(topic+".dlq", maxTopicLen)}
	var rgroups []string
	for _, g := range groups {
		rg := groupName(g, topic)
		rgroups = append(rgroups, rg)
		topics = append(topics, rg+"|retry", "%RETRY%"+rg, "%DLQ%"+rg)
	}
	var errs []error
	for _, addr := range masters {
		c, err := b.brokers.get(ctx, addr)
		if err != nil {
			return err
		}
		for _, t := range topics {
			if _, err := c.callOK(ctx, codeDeleteTopicInBroker, map[string]string{"topic": t}, nil); err != nil {
				errs = append(errs, fmt.Errorf("deleting topic %s on %s: %w", t, addr, err))
			}
		}
		for _, g := range rgroups {
			if _, err := c.callOK(ctx, codeDeleteSubscription, map[string]string{"groupName": g, "cleanOffset": "true"}, nil); err != nil {
				errs = append(errs, fmt.Errorf("deleting group %s on %s: %w", g, addr, err))
			}
		}
	}
	for _, t := range topics {
		resp, err := b.nsCall(ctx, codeDeleteTopicInNamesrv, map[string]string{"topic": t})
		if err == nil && resp.Code != respSuccess {
			err = &ResponseError{Request: codeDeleteTopicInNamesrv, Code: resp.Code, Remark: resp.Remark}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("deleting topic %s on the name servers: %w", t, err))
		}
		b.mu.Lock()
		delete(b.routes, t)
		b.mu.Unlock()
	}
	return errors.Join(errs...)
}

// groupName is the RocketMQ consumer group of an omnibus group on a topic.
func groupName(group, topic string) string {
	return Name(group, (maxGroupLen-2)/2) + "__" + Name(topic, (maxGroupLen-2)/2)
}
