"""Password hashers beyond Django's own."""

import bcrypt
from django.contrib.auth.hashers import Argon2PasswordHasher, BasePasswordHasher, mask_hash
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext_noop as _


class LegacyBcryptPasswordHasher(BasePasswordHasher):
    """Verifies bcrypt hashes from PHP's ``password_hash`` (REMP): ``bcrypt_php$$2y$10$...``.

    Never used to make new hashes: ``must_update`` is always true, so Django rehashes with the
    first hasher (Argon2) on the first successful login. Like PHP, only the first 72 bytes of the
    password count.
    """

    algorithm = "bcrypt_php"

    def salt(self):
        return ""

    def encode(self, password, salt):
        raise ValueError("legacy bcrypt hashes are verified, never created")

    def decode(self, encoded):
        algorithm, legacy = encoded.split("$", 1)
        assert algorithm == self.algorithm
        return {"algorithm": algorithm, "hash": legacy, "salt": legacy[7:29]}

    def verify(self, password, encoded):
        legacy = self.decode(encoded)["hash"]
        candidate = legacy.encode("ascii")
        # bcrypt's $2y$ (PHP) and $2b$ are the same algorithm; the library knows $2b$ and $2a$.
        if candidate.startswith(b"$2y$"):
            candidate = b"$2b$" + candidate[4:]
        try:
            computed = bcrypt.hashpw(password.encode("utf-8")[:72], candidate)
        except ValueError:
            return False
        return constant_time_compare(computed, candidate)

    def safe_summary(self, encoded):
        decoded = self.decode(encoded)
        return {_("algorithm"): decoded["algorithm"], _("hash"): mask_hash(decoded["hash"])}

    def must_update(self, encoded):
        return True

    def harden_runtime(self, password, encoded):
        pass


class FastArgon2PasswordHasher(Argon2PasswordHasher):
    """Argon2 at minimal cost, used only under MASTHEAD_TESTING: same code path, fast tests."""

    algorithm = "argon2"
    time_cost = 1
    memory_cost = 64
    parallelism = 1
