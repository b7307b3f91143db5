import { Link } from 'react-router';
import { EmptyState } from '../components/ui';

export default function NotFoundPage() {
  return (
    <main className="page narrow" id="main">
      <title>Page not found · Sequent</title>
      <EmptyState title="This page does not exist.">
        <p>
          <Link to="/" className="btn btn-primary">
            Go to your accounts
          </Link>
        </p>
      </EmptyState>
    </main>
  );
}
