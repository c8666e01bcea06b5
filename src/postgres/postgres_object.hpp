// The PostgreSQL backend: one name's state in this process, and a lock object with its session.
//
// Each object talks to the server through a session of its own (session.hpp): its holder in the
// engine's terms (engine/lock_state.hpp). The server excludes sessions from each other; the engine
// excludes this process's threads and objects, per name on one server and database (key_state).
// An object waits in the server only while its session holds nothing there: further reading
// threads of the object share its read lock, after asking the server whether a writer waits
// anywhere. So a session never waits while it holds, and a release never queues behind a wait.
//
// Asynchronous acquisitions wait on the sessions' sockets (start_wait()): the wait statement is
// sent without waiting for its reply, and the async thread's poller watches the socket; its
// reply ends the wait. A wait that the engine gives up (cancelled, timed out, the object
// destroyed) is settled by a drain thread (stop_wait()): it cancels the statement, reads its
// reply, and lets go of a lock granted all the same, while the holder stays busy, so that nothing
// else is sent on the session meanwhile.
//
// Mutex rules: a key_state's mutex (the engine's) guards its holdings, its objects' holders and
// their waits (session_holder); it is let go during every call to the server that blocks, with
// the holder marked busy, and taken before the registry's, the async thread's and the drain
// queue's. sessions_mu guards which session each object has; it is taken before a key_state's
// mutex, and let go while an object connects. A loss_gate's mutex is taken after a key_state's
// (begin()) or alone, and never held while an on_lost handler runs.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>

#include "engine/lock_object.hpp"
#include "engine/lock_state.hpp"
#include "fasteners/postgres.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail::postgres {

class session;
class postgres_object;
class server_wait;
class loss_watch;

// The on_lost handler of an object (postgres_options::on_lost), and whether it runs: the object's
// destruction closes it, waiting for a running call. Thread-safe; shared with the watches that
// call it, so that it outlives an object destroyed by its own handler.
class loss_gate {
 public:
  loss_gate(std::function<void(const std::string&)> handler, std::string name)
      : handler_(std::move(handler)), name_(std::move(name)) {}
  // Counts a call about to run; false once closed.
  bool begin() noexcept;
  // Runs the handler counted by begin(), on the calling thread. A handler that throws ends the
  // process.
  void call() noexcept;
  // No call begins any more; waits until a running one returns, unless it runs on the calling
  // thread (a handler that destroys its own object).
  void close() noexcept;
  const std::function<void(const std::string&)>& handler() const noexcept { return handler_; }
  const std::string& name() const noexcept { return name_; }

 private:
  const std::function<void(const std::string&)> handler_;
  const std::string name_;
  mutex mu_;
  std::condition_variable done_;
  int running_ FASTENERS_GUARDED_BY(mu_) = 0;
  bool closed_ FASTENERS_GUARDED_BY(mu_) = false;
  std::thread::id caller_ FASTENERS_GUARDED_BY(mu_);
};

// An object's holder (engine::holder), with the wait in the server that its session runs for an
// asynchronous acquisition, if any (see key_state::start_wait()), and the watch for a loss of
// what it holds (key_state::holder_at_rest()). Guarded by the mutex of the state it belongs to.
struct session_holder : engine::holder {
  std::shared_ptr<server_wait> wait;
  std::shared_ptr<loss_watch> loss;
  postgres_object* object = nullptr;  // Its object, set once.
};

// Guards every object's session and whether it connects, and the list of objects (for fork()).
// Held across no call to the server; taken before a key_state's mutex.
extern mutex sessions_mu;

// A lock name on one server and database, as this process uses it.
using key_id = std::tuple<std::string, std::string, std::int64_t>;

// One name's state in this process. Thread-safe.
class key_state final : public engine::lock_state {
 public:
  // A state for `id`, bound once (for the object that made it).
  explicit key_state(key_id id);
  const key_id& id() const noexcept { return id_; }

  // Runs `call` (a brief call on the session of `h`'s object, such as whether it is alive) with
  // `h` busy and the mutex let go, as the engine runs its backend calls; returns its result.
  template <class Call>
  bool use_holder(engine::holder& h, Call call) FASTENERS_EXCLUDES(mu_);
  // Waits until no call uses `h` (a wait that a drain thread settles included); then, with
  // `reset`, ends its part here, so that its object may start another session. Returns false at
  // once, resetting nothing, while an acquire of the object waits through `h`: the object is
  // bound meanwhile.
  [[nodiscard]] bool settle(session_holder& h, bool reset) FASTENERS_EXCLUDES(mu_);

  // ---- The waits in the server (server_wait). ----
  // The socket of `w` is ready (the async thread's poller): reads the reply, and reports the wait
  // ended once it is complete.
  void on_ready(server_wait& w, short revents) noexcept FASTENERS_EXCLUDES(mu_);
  // On a drain thread: settles `w`, which the engine gave up, then lets the holder go.
  void drain(server_wait& w) noexcept FASTENERS_EXCLUDES(mu_);

  // ---- The watches for a lost session (postgres_options::on_lost). ----
  // The socket of a holding, idle session is ready (the async thread's poller): reads what came;
  // if the session is gone, marks its holder lost, ends the watch and calls the object's on_lost
  // handler, without the mutex.
  void on_loss_ready(loss_watch& w, short revents) noexcept FASTENERS_EXCLUDES(mu_);
  // Ends the loss watch of `h`, if any (its object is destroyed).
  void end_loss_watch(session_holder& h) noexcept FASTENERS_EXCLUDES(mu_);

 protected:
  engine::outcome try_lock(engine::holder& h, lock_mode mode, engine::lock_object& owner) override
      FASTENERS_REQUIRES(mu_);
  engine::outcome wait_lock(engine::holder& h, lock_mode mode, deadline until,
                            engine::lock_object& owner) override FASTENERS_REQUIRES(mu_);
  std::exception_ptr unlock(engine::holder& h, lock_mode mode, engine::lock_object& owner,
                            bool unbinding) override FASTENERS_REQUIRES(mu_);
  bool writer_waiting_elsewhere(engine::holder& h, const engine::lock_object& owner) override
      FASTENERS_REQUIRES(mu_);
  std::intptr_t handle_of(engine::holder& h, const engine::lock_object& owner) override
      FASTENERS_REQUIRES(mu_);
  void on_unbind() override FASTENERS_REQUIRES(mu_);
  bool waits_async() const override { return true; }
  engine::outcome start_wait(engine::holder& h, lock_mode mode, engine::lock_object& owner) override
      FASTENERS_REQUIRES(mu_);
  bool stop_wait(engine::holder& h, engine::lock_object& owner) noexcept override
      FASTENERS_REQUIRES(mu_);
  // The table fasteners_fence, through the owner's session, without the mutex (session::fence()).
  std::uint64_t fence(engine::holder& h, lock_mode mode, engine::lock_object& owner) override
      FASTENERS_REQUIRES(mu_);
  // Watches the session of `h` for a loss while it holds and is idle, if its object has an
  // on_lost handler.
  void holder_at_rest(engine::holder& h) noexcept override FASTENERS_REQUIRES(mu_);

 private:
  // Ends the loss watch of `h`, if any: a call is about to use its session.
  void stop_loss_watch(engine::holder& h) noexcept FASTENERS_REQUIRES(mu_);
  // Asks the server for the lock through the owner's session, without the mutex.
  engine::outcome request(engine::holder& h, lock_mode mode, deadline until,
                          engine::lock_object& owner) FASTENERS_REQUIRES(mu_);

  const key_id id_;
};

// One PostgreSQL lock object. Thread-safe.
class postgres_object final : public engine::lock_object {
 public:
  // Throws std::invalid_argument for a name with a NUL byte. Does not connect.
  postgres_object(std::string conninfo, std::string name, const postgres_options& options);
  // Releases whatever the object holds and ends its session; never throws.
  ~postgres_object() override;

  const std::string& name() const noexcept { return name_; }
  std::int64_t key() const noexcept { return key_; }
  const postgres_options& options() const noexcept { return options_; }
  // Whether the session is still open as far as this process can tell without a round trip.
  bool session_alive() noexcept;

  // For key_state, while the object's holder is busy: the object's session, the state it is
  // bound to, and its holder there.
  session& current_session() noexcept;
  std::shared_ptr<key_state> current_state() noexcept;
  session_holder& holder() noexcept { return holder_; }
  // The on_lost handler's gate, or nullptr without a handler.
  const std::shared_ptr<loss_gate>& lost_gate() const noexcept { return loss_gate_; }

  [[noreturn]] void fail(std::error_code ec, std::string_view action,
                         std::string_view detail) const override;

  // The fork() hooks of the PostgreSQL locks.
  static void prepare_fork();
  static void parent_after_fork();
  static void child_after_fork();

 protected:
  std::shared_ptr<engine::lock_state> find_state() override;
  engine::holder& holder_in(engine::lock_state& state) override;
  bool stays_bound(const engine::lock_state& state) const override;
  const char* lost_reason() const noexcept override;
  // With close_on_release: ends the session once the object holds nothing.
  void unbound() noexcept override;
  // Whether the object has no live session yet, which binding connects.
  bool binding_may_block() const noexcept override;
  bool holder_alive() noexcept override { return session_alive(); }

 private:
  // A session of its own, connected, and the state of the name on its server, attached.
  std::shared_ptr<key_state> connect() FASTENERS_REQUIRES(sessions_mu);
  std::string where() const;

  const std::string conninfo_;
  const std::string name_;
  const std::int64_t key_;
  const postgres_options options_;

  std::unique_ptr<session> session_ FASTENERS_GUARDED_BY(sessions_mu);
  bool connecting_ FASTENERS_GUARDED_BY(sessions_mu) = false;
  // The state the session's holder belongs to (until the next session).
  std::shared_ptr<key_state> state_ FASTENERS_GUARDED_BY(sessions_mu);
  // The session's holder: its fields are guarded by state_'s mutex.
  session_holder holder_;
  // With an on_lost handler: its gate (replaced only in a forked child).
  std::shared_ptr<loss_gate> loss_gate_;
};

}  // namespace fasteners::detail::postgres
