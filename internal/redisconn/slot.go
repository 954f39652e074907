package redisconn

import "strings"

// Slots is the number of hash slots of a Redis Cluster.
const Slots = 16384

// HashTag returns the part of key that Redis Cluster hashes: the text
// between the first "{" and the first "}" after it when that is not empty,
// else the whole key.
func HashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// Slot returns the hash slot of key: CRC16 (XMODEM) of its hash tag,
// modulo Slots.
func Slot(key string) int {
	var crc uint16
	for _, b := range []byte(HashTag(key)) {
		crc ^= uint16(b) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % Slots
}

// Tagged returns a key of the same slot as key: prefix, key's hash tag in
// braces, then suffix. ok is false when no such key can be made because the
// hash tag itself holds a "}".
func Tagged(prefix, key, suffix string) (string, bool) {
	tag := HashTag(key)
	if strings.IndexByte(tag, '}') >= 0 {
		return "", false
	}
	return prefix + "{" + tag + "}" + suffix, true
}
