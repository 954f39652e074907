// Package brokers holds the smoke tests of the brokers that scripts/brokers
// starts, through each broker's own Go client.
package brokers
