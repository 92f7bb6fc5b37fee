import Foundation

/// A task executor with one thread of its own that runs its jobs one at a time, in the order they
/// were enqueued. Tasks that prefer it (`Task(executorPreference:)`, and their child tasks) never
/// run in parallel with each other, and — when nothing outside them wakes them — in the same order
/// on every run: the deterministic simulation runs each link on one, so a seed replays exactly.
/// (On the shared pool two child tasks racing on an auto-advancing clock, say a link's wait for
/// entries and its timer, finished in either order, and ~15 seeds in 10 000 ended differently.)
///
/// ``shutdown()`` ends the thread once the queued jobs have run; jobs enqueued after it run on the
/// global concurrent executor, so nothing that prefers this executor is left hanging.
public final class SingleThreadTaskExecutor: TaskExecutor, @unchecked Sendable {
    // Guarded by `condition`.
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var nextJobIndex = 0
    private var stopping = false
    private var stopped = false

    public init(name: String) {
        let thread = Thread { [self] in runJobs() }
        thread.name = name
        thread.start()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        if stopped {
            condition.unlock()
            globalConcurrentExecutor.enqueue(job)
            return
        }
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Ends the thread after the jobs already queued.
    public func shutdown() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    private func runJobs() {
        while let job = nextJob() { job.runSynchronously(on: asUnownedTaskExecutor()) }
    }

    private func nextJob() -> UnownedJob? {
        condition.lock()
        defer { condition.unlock() }
        while nextJobIndex == jobs.count && !stopping { condition.wait() }
        guard nextJobIndex < jobs.count else {
            stopped = true
            return nil
        }
        let job = jobs[nextJobIndex]
        nextJobIndex += 1
        if nextJobIndex == jobs.count {  // drained: drop the run jobs
            jobs.removeAll(keepingCapacity: true)
            nextJobIndex = 0
        }
        return job
    }
}
