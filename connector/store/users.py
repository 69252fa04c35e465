"""Admin users: the people who sign in to the admin UI by name. Only password hashes are kept."""

from __future__ import annotations

from dataclasses import dataclass

from connector.store.db import Part

ROLES = ("lead", "admin")  # a team lead reviews corrections and reads every page; an admin also changes things


@dataclass
class AdminUser:
    name: str
    password_hash: str
    role: str  # lead | admin
    created_at: float
    updated_at: float


class Users(Part):
    """The `admin_users` table. Names are case-folded by the caller (connector.admin.gate.user_name)."""

    def get(self, name: str) -> AdminUser | None:
        rows = self.execute("SELECT * FROM admin_users WHERE name = :name", {"name": name})
        return AdminUser(**rows[0]) if rows else None

    def add(self, name: str, password_hash: str, *, now: float, role: str = "lead") -> bool:
        """Add a user; False if the name is taken."""
        rows = self.execute("INSERT INTO admin_users (name, password_hash, role, created_at, updated_at)"
                            " VALUES (:name, :hash, :role, :now, :now) ON CONFLICT (name) DO NOTHING RETURNING name",
                            {"name": name, "hash": password_hash, "role": role, "now": now})
        return bool(rows)

    def set_role(self, name: str, role: str) -> bool:
        """Make a user a team lead or an admin (from their next click); False if there is no such user."""
        return bool(self.execute("UPDATE admin_users SET role = :role WHERE name = :name RETURNING name",
                                 {"name": name, "role": role}))

    def set_password(self, name: str, password_hash: str, *, now: float) -> bool:
        """Replace a user's password (which ends their sessions); False if there is no such user."""
        rows = self.execute("UPDATE admin_users SET password_hash = :hash, updated_at = :now WHERE name = :name"
                            " RETURNING name", {"name": name, "hash": password_hash, "now": now})
        return bool(rows)

    def remove(self, name: str) -> bool:
        rows = self.execute("DELETE FROM admin_users WHERE name = :name RETURNING name", {"name": name})
        return bool(rows)

    def exist(self) -> bool:
        return bool(self.execute("SELECT 1 AS one FROM admin_users LIMIT 1"))

    def all(self) -> list[AdminUser]:
        return [AdminUser(**row) for row in self.execute("SELECT * FROM admin_users ORDER BY name")]
